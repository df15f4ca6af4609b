"""``elasticsearch/init.sh``, run as operators run it, against real nodes."""

import subprocess
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from tests.conftest import Node

INIT_SH = Path(__file__).parents[1] / "elasticsearch" / "init.sh"


def init_sh(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INIT_SH), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_help_prints_usage() -> None:
    result = init_sh("-h")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: init.sh [options] <Elasticsearch URL>")
    for option in ("-u USER:PASS", "-i", "-p PREFIX"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "expected exactly one Elasticsearch URL"),
        (("-x", "http://localhost:9200"), "unknown option -x"),
        (("-p",), "option -p needs a value"),
        (("-p", "Upper-", "http://localhost:9200"), "must be lower case"),
        (("-p", "a*b", "http://localhost:9200"), "a character index names cannot have"),
        (("localhost:9200",), "not an http:// or https:// URL"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    result = init_sh(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_creates_then_reports_existing(es_url: str, index_prefix: str) -> None:
    first = init_sh("-p", index_prefix, es_url)
    assert first.returncode == 0, first.stderr
    assert sorted(first.stdout.splitlines()) == [
        f"index {index_prefix}storage-registry created",
        f"index {index_prefix}storage-registry-lock created",
        f"template {index_prefix}storage-data created",
        f"template {index_prefix}storage-history created",
    ]
    with Elasticsearch(es_url) as client:
        before = client.indices.get_index_template(name=f"{index_prefix}storage-*")
        second = init_sh("-p", index_prefix, es_url)
        assert second.returncode == 0, second.stderr
        assert sorted(second.stdout.splitlines()) == [
            f"index {index_prefix}storage-registry already exists",
            f"index {index_prefix}storage-registry-lock already exists",
            f"template {index_prefix}storage-data already exists",
            f"template {index_prefix}storage-history already exists",
        ]
        assert client.indices.get_index_template(name=f"{index_prefix}storage-*") == before
        patterns = {
            template["name"]: template["index_template"]["index_patterns"]
            for template in before["index_templates"]
        }
    assert patterns == {
        f"{index_prefix}storage-data": [f"{index_prefix}storage-data-*"],
        f"{index_prefix}storage-history": [f"{index_prefix}storage-history-*"],
    }


def test_unreachable_elasticsearch_exits_1(unused_tcp_port: int) -> None:
    result = init_sh(f"http://127.0.0.1:{unused_tcp_port}")
    assert result.returncode == 1
    assert "cannot reach Elasticsearch" in result.stderr


@pytest.mark.security
def test_credentials_from_option_and_prompt(secured_es: Node, index_prefix: str) -> None:
    refused = init_sh("-p", index_prefix, secured_es.url)
    assert refused.returncode == 1
    assert "refused the credentials (401)" in refused.stderr

    with_option = init_sh(
        "-p", index_prefix, "-u", f"{secured_es.username}:{secured_es.password}", secured_es.url
    )
    assert with_option.returncode == 0, with_option.stderr
    assert with_option.stdout.count("created") == 4

    prompted = init_sh(
        "-i",
        "-p",
        index_prefix,
        secured_es.url,
        stdin=f"{secured_es.username}\n{secured_es.password}\n",
    )
    assert prompted.returncode == 0, prompted.stderr
    assert prompted.stdout.count("already exists") == 4
    assert secured_es.password not in prompted.stdout + prompted.stderr  # type: ignore[operator]
