"""``kv-storage storage ...``: the administration commands, run as an operator runs them."""

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from kv_storage.config import Config


def kv_storage(es_url: str, index_prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
    }
    return subprocess.run(
        [sys.executable, "-m", "kv_storage", "storage", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def output(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_create_show_list_rotate_delete(
    es_url: str, index_prefix: str, initialised_config: Config
) -> None:
    created = output(
        kv_storage(
            es_url,
            index_prefix,
            "create",
            "--type",
            "ACCOUNT",
            "--account",
            "ops",
            "--name",
            "cfg",
            "--history",
        )
    )
    assert (created["account"], created["historyEnabled"]) == ("ops", True)
    assert created["secretKey"]
    shown = output(kv_storage(es_url, index_prefix, "show", created["id"]))
    assert shown["id"] == created["id"]
    assert "secretKey" not in shown
    listed = output(kv_storage(es_url, index_prefix, "list", "--account", "ops"))
    assert [item["id"] for item in listed["items"]] == [created["id"]]
    # The administration API's page: {"total", "page", "size", "items"}.
    assert (listed["total"], listed["page"], listed["size"]) == (1, 1, 1)
    second = output(kv_storage(es_url, index_prefix, "list", "--account", "ops", "--page", "2"))
    assert (second["total"], second["page"], second["size"], second["items"]) == (1, 2, 0, [])
    rotated = output(kv_storage(es_url, index_prefix, "rotate-key", created["id"]))
    assert rotated["secretKey"] != created["secretKey"]
    deleted = output(kv_storage(es_url, index_prefix, "delete", created["id"]))
    assert deleted["deleted"] is True
    missing = kv_storage(es_url, index_prefix, "delete", created["id"])
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr


def test_vm_and_temp(es_url: str, index_prefix: str, initialised_config: Config) -> None:
    vm = output(kv_storage(es_url, index_prefix, "create", "--type", "VM", "--vm", "vm-1234"))
    assert vm["id"] == "vm-1234"
    temp = output(kv_storage(es_url, index_prefix, "create", "--type", "TEMP", "--ttl", "60000"))
    assert temp["ttl"] == 60000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "--type", "TEMP"), "ttl: required"),
        (("create", "--type", "ACCOUNT", "--name", "n"), "account: required"),
        (("create", "--type", "TEMP", "--ttl", "5", "--account", "a"), "account: not allowed"),
        (("list", "--account", "a", "--size", "0"), "--size"),
    ],
)
def test_bad_input_exits_2(
    es_url: str, index_prefix: str, args: tuple[str, ...], message: str
) -> None:
    result = kv_storage(es_url, index_prefix, *args)
    assert result.returncode == 2
    assert message in result.stderr
