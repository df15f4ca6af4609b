"""The shell examples of docs/api.md's "Conditional writes and blocking reads" run as written.

Readers copy these loops into their scripts; a loop that does not work (a header curl sends by
itself, a tag read with its carriage return) fails here, against a service on the real node.
Only the address is changed, to the test server's.
"""

import asyncio
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.conftest import StorageFactory, StorageRef
from tests.helpers import Client, path
from tests.waiting import wait_until

API_DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
SECTION = "## Conditional writes and blocking reads"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the examples use curl")


def _examples() -> list[str]:
    text = API_DOC.read_text(encoding="utf-8")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def _for(api: Client, example: str) -> str:
    return example.replace("http://localhost:8080", str(api.make_url("")).rstrip("/"))


async def _run(script: str, storage: StorageRef, workdir: Path) -> tuple[int, str]:
    """Runs ``script`` in a directory of its own (the examples keep files in the current one)."""
    environ = {**os.environ, "S": storage.id, "K": f"Secret-Key: {storage.secret_key}"}
    in_own_directory = f'mkdir "{workdir.name}" && cd "{workdir.name}"\n{script}'
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euc",
        in_own_directory,
        cwd=workdir.parent,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, stdout.decode()


async def _value(api: Client, storage: StorageRef, key: str) -> tuple[int, str]:
    response = await api.get(path("get", storage, key), headers=storage.headers)
    return response.status, await response.text()


async def _metric(api: Client, sample: str) -> float:
    text = await (await api.get("/metrics")).text()
    rows = [row for row in text.splitlines() if row.startswith(sample + " ")]
    return float(rows[0].split()[-1]) if rows else 0.0


def test_the_section_has_both_examples() -> None:
    assert len(_examples()) == 2


async def test_the_compare_and_set_loop_counts_every_client(
    api: Client, create_storage: StorageFactory, tmp_path: Path
) -> None:
    storage = await create_storage()
    loop = _for(api, _examples()[0])
    clients = 8
    results = await asyncio.gather(
        *(_run(loop, storage, tmp_path / f"client-{n}") for n in range(clients))
    )
    assert [code for code, _ in results] == [0] * clients
    assert await _value(api, storage, "counter") == (200, str(clients))


async def test_the_wait_loop_prints_each_change_and_ends_with_the_key(
    api: Client, create_storage: StorageFactory, tmp_path: Path
) -> None:
    storage = await create_storage()
    compare_and_set, wait_for_change = (_for(api, example) for example in _examples())
    # "with KV and etag as above": the definitions the first example opens with.
    definitions = "\n".join(compare_and_set.splitlines()[:2])
    headers = {**storage.headers, "Content-Type": "text/plain"}

    async def set_mode(value: str) -> None:
        response = await api.put(path("set", storage, "mode"), data=value, headers=headers)
        assert response.status == 200

    async def waiting() -> bool:
        return await _metric(api, "kv_storage_watch_waiters") == 1

    def woken(times: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            wakeups = await _metric(api, 'kv_storage_watch_wakeups_total{cause="write"}')
            return wakeups >= times

        return check

    await set_mode("first")
    script = asyncio.create_task(
        _run(definitions + "\n" + wait_for_change, storage, tmp_path / "waiter")
    )
    for times, value in enumerate(("second", "third"), start=1):
        await wait_until(waiting, timeout_s=20, what="the loop waiting")
        await set_mode(value)
        await wait_until(woken(times), what=f"wake-up {times}")
    await wait_until(waiting, timeout_s=20, what="the loop waiting again")
    response = await api.delete(path("delete", storage, "mode"), headers=storage.headers)
    assert response.status == 200
    assert await script == (0, "second\nthird\n")
