"""``elasticsearch/init.sh``, run as operators run it, against real nodes.

Also checks that the definitions it installs hold what the service stores: values of several
megabytes, and history records sortable by every field.
"""

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch

from tests.conftest import SecuredElasticsearch

DEFINITIONS = Path(__file__).parents[1] / "elasticsearch"
INIT_SH = DEFINITIONS / "init.sh"

INDICES = (
    "storage-registry",
    "storage-registry-lock",
    "storage-shared-data",
    "storage-shared-history",
    "storage-signing-keys",
)
TEMPLATES = ("storage-data", "storage-history")


def init_sh(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INIT_SH), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def lines(prefix: str, outcome: str) -> list[str]:
    return sorted(
        [f"index {prefix}{name} {outcome}" for name in INDICES]
        + [f"template {prefix}{name} {outcome}" for name in TEMPLATES]
        + [f"indices {prefix}{name}-* up to date (0 indices)" for name in TEMPLATES]
        + [f"signing key history-scroll {outcome}"]
        + ["key field of stored data up to date"]  # a new deployment: nothing to migrate
    )


def definition(kind: str, name: str, prefix: str) -> Any:
    text = (DEFINITIONS / kind / f"{name}.json").read_text()
    return json.loads(text.replace("__PREFIX__", prefix))


def initialise(es_url: str, prefix: str) -> None:
    result = init_sh("-p", prefix, es_url)
    assert result.returncode == 0, result.stderr


# Command line ------------------------------------------------------------------------------


def test_help_prints_usage() -> None:
    result = init_sh("-h")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: init.sh [options] <Elasticsearch URL>\n")
    for option in ("-h ", "-u USER:PASS", "-i ", "-p PREFIX"):
        assert option in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "expected exactly one Elasticsearch URL"),
        (("http://localhost:9200", "http://localhost:9201"), "expected exactly one"),
        (("-x", "http://localhost:9200"), "unknown option -x"),
        (("-p",), "option -p needs a value"),
        (("-u",), "option -u needs a value"),
        (("-p", "Upper-", "http://localhost:9200"), "must be lower case"),
        (("-p", "a*b-", "http://localhost:9200"), "a character index names cannot have"),
        (("-p", "a b-", "http://localhost:9200"), "a character index names cannot have"),
        (("-p", "a:b-", "http://localhost:9200"), "a character index names cannot have"),
        (("-p", "_a-", "http://localhost:9200"), "cannot start with -, _ or +"),
        (("-p", "+a-", "http://localhost:9200"), "cannot start with -, _ or +"),
        (("-p", "a" * 101, "http://localhost:9200"), "longer than 100 bytes"),
        (("-u", "nocolon", "http://localhost:9200"), "-u needs USER:PASSWORD"),
        (("-u", "a:b", "-i", "http://localhost:9200"), "give -u or -i, not both"),
        (("localhost:9200",), "not an http:// or https:// URL"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    result = init_sh(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert 'Try "init.sh -h" for help.' in result.stderr
    assert result.stdout == ""


def test_prompt_without_answers_is_a_usage_error() -> None:
    result = init_sh("-i", "http://127.0.0.1:9", stdin="")
    assert result.returncode == 2
    assert "no username given" in result.stderr


def test_unreachable_elasticsearch_exits_1(unused_tcp_port: int) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}"
    result = init_sh(url)
    assert result.returncode == 1
    assert f"cannot reach Elasticsearch at {url}" in result.stderr
    assert result.stdout == ""


# Creating the indices and templates -----------------------------------------------------------


def test_creates_then_reports_existing(es_url: str, index_prefix: str) -> None:
    first = init_sh("-p", index_prefix, es_url)
    assert first.returncode == 0, first.stderr
    assert sorted(first.stdout.splitlines()) == lines(index_prefix, "created")

    with Elasticsearch(es_url) as client:
        for name in INDICES:
            assert client.indices.exists(index=f"{index_prefix}{name}")
        indices = client.indices.get(index=[f"{index_prefix}{name}" for name in INDICES])
        templates = client.indices.get_index_template(name=f"{index_prefix}storage-*")

        second = init_sh("-p", index_prefix, f"{es_url}/")
        assert second.returncode == 0, second.stderr
        assert sorted(second.stdout.splitlines()) == lines(index_prefix, "up to date")
        assert client.indices.get(index=[f"{index_prefix}{name}" for name in INDICES]) == indices
        assert client.indices.get_index_template(name=f"{index_prefix}storage-*") == templates

    assert sorted(indices) == sorted(f"{index_prefix}{name}" for name in INDICES)
    for name in INDICES:
        assert (
            indices[f"{index_prefix}{name}"]["mappings"]
            == definition("indices", name, "")["mappings"]
        )
    patterns = {
        template["name"]: template["index_template"]["index_patterns"]
        for template in templates["index_templates"]
    }
    assert patterns == {
        f"{index_prefix}storage-data": [f"{index_prefix}storage-data-*"],
        f"{index_prefix}storage-history": [f"{index_prefix}storage-history-*"],
    }


@pytest.mark.parametrize("template", TEMPLATES)
def test_new_indices_get_the_templates_mappings(
    es_url: str, index_prefix: str, template: str
) -> None:
    initialise(es_url, index_prefix)
    with Elasticsearch(es_url) as client:
        index = f"{index_prefix}{template}-x"
        client.indices.create(index=index)
        mappings = client.indices.get_mapping(index=index)[index]["mappings"]
        settings = client.indices.get_settings(index=index)[index]["settings"]["index"]
        # Another deployment's indices (no prefix, or another one) are left alone.
        other = f"other-{index_prefix}{template}-x"
        client.indices.create(index=other)
        other_mappings = client.indices.get_mapping(index=other)[other]["mappings"]
        client.indices.delete(index=other)
    expected = definition("templates", template, index_prefix)["template"]
    assert mappings["properties"] == expected["mappings"]["properties"]
    assert mappings["dynamic"] == str(expected["mappings"]["dynamic"]).lower()  # "false"
    assert settings["number_of_shards"] == "1"
    assert settings["auto_expand_replicas"] == "0-1"
    assert other_mappings == {}


def test_the_prefix_is_optional_and_may_hold_special_characters(
    es_url: str, index_prefix: str
) -> None:
    # & means "the matched text" to sed, and % needs encoding in a URL path.
    prefix = f"{index_prefix}a&b%c.é-"
    result = init_sh("-p", prefix, es_url)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == lines(prefix, "created")
    with Elasticsearch(es_url) as client:
        templates = client.indices.get_index_template(name=f"{prefix}storage-data")
    assert templates["index_templates"][0]["index_template"]["index_patterns"] == [
        f"{prefix}storage-data-*"
    ]


# Credentials ---------------------------------------------------------------------------------


@pytest.mark.security
def test_credentials_from_option_and_prompt(
    secured_es: SecuredElasticsearch, index_prefix: str
) -> None:
    ca = ("-c", secured_es.ca_file)
    refused = init_sh("-p", index_prefix, *ca, secured_es.url)
    assert refused.returncode == 1
    assert "Elasticsearch refused the credentials (401)" in refused.stderr
    assert refused.stdout == ""

    wrong = init_sh(
        "-p", index_prefix, *ca, "-u", f"{secured_es.username}:wrong-pw", secured_es.url
    )
    assert wrong.returncode == 1
    assert "Elasticsearch refused the credentials (401)" in wrong.stderr

    credentials = f"{secured_es.username}:{secured_es.password}"
    with_option = init_sh("-p", index_prefix, *ca, "-u", credentials, secured_es.url)
    assert with_option.returncode == 0, with_option.stderr
    assert sorted(with_option.stdout.splitlines()) == lines(index_prefix, "created")
    with secured_es.client() as client:
        for name in INDICES:
            assert client.indices.exists(index=f"{index_prefix}{name}")
        for name in TEMPLATES:
            assert client.indices.exists_index_template(name=f"{index_prefix}{name}")

    prompted = init_sh(
        "-i",
        "-p",
        index_prefix,
        *ca,
        secured_es.url,
        stdin=f"{secured_es.username}\n{secured_es.password}\n",
    )
    assert prompted.returncode == 0, prompted.stderr
    assert sorted(prompted.stdout.splitlines()) == lines(index_prefix, "up to date")
    assert secured_es.password not in prompted.stdout + prompted.stderr


# What the definitions hold -------------------------------------------------------------------


async def test_data_index_holds_multi_megabyte_values(
    es_url: str, es: AsyncElasticsearch, index_prefix: str
) -> None:
    initialise(es_url, index_prefix)
    index = f"{index_prefix}storage-data-x"
    value = "0123456789abcdé\n" * (5 * 1024 * 1024 // 16)  # 5 MiB of characters
    await es.index(index=index, id="big", document={"value": value}, refresh=True)
    stored = await es.get(index=index, id="big")
    assert stored["_source"]["value"] == value


HISTORY: dict[str, dict[str, Any]] = {
    "1": {"key": "b", "value": "2", "timestamp": 3000, "operation": "set"},
    "2": {"key": "a", "value": "1", "timestamp": 1000, "operation": "set"},
    "3": {"key": "c", "value": "v" * 100_000, "timestamp": 2000, "operation": "set"},
    "4": {"key": "a", "value": None, "timestamp": 4000, "operation": "delete"},
    "5": {"key": None, "value": None, "timestamp": 5000, "operation": "clear"},
}


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("key", ["2", "4", "1", "3", "5"]),  # a clear has no key: last
        ("-key", ["3", "1", "2", "4", "5"]),
        # Values longer than the sortable limit (8191 characters) sort as missing: last.
        ("value", ["2", "1", "3", "4", "5"]),
        ("-value", ["1", "2", "3", "4", "5"]),
        ("timestamp", ["2", "3", "1", "4", "5"]),
        ("-timestamp", ["5", "4", "1", "3", "2"]),
        ("operation", ["5", "4", "2", "3", "1"]),
        ("-operation", ["2", "3", "1", "4", "5"]),
    ],
)
async def test_history_index_sorts_by_every_field(
    es_url: str, es: AsyncElasticsearch, index_prefix: str, sort: str, expected: list[str]
) -> None:
    initialise(es_url, index_prefix)
    index = f"{index_prefix}storage-history-x"
    operations: list[dict[str, Any]] = []
    for record_id, record in HISTORY.items():
        operations += [{"index": {"_index": index, "_id": record_id}}, record]
    answer = await es.bulk(operations=operations, refresh=True)
    assert not answer["errors"], answer

    field = sort.removeprefix("-")
    order = "desc" if sort.startswith("-") else "asc"
    found = await es.search(
        index=index,
        sort=[{field: {"order": order}}, {"timestamp": {"order": "asc"}}],
        size=10,
    )
    hits = found["hits"]["hits"]
    assert [hit["_id"] for hit in hits] == expected
    assert {hit["_id"]: hit["_source"] for hit in hits} == HISTORY
