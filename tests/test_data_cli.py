"""``kv-storage kv``: every command run as a process against the real service, its output,
its exit codes, and the secret that never appears on a command line."""

import asyncio
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kv_storage.app import create_app
from kv_storage.config import Config
from kv_storage.data_cli import (
    EXIT_CONFLICT,
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
)
from kv_storage_client import AsyncClient
from tests.conftest import StorageFactory, StorageRef
from tests.helpers import Client, ClientFactory
from tests.waiting import wait_until


@pytest.fixture
async def service(
    make_config: Callable[..., Config], initialised_config: Config, aiohttp_client: ClientFactory
) -> Client:
    return await aiohttp_client(
        create_app(make_config(KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="100ms"))
    )


def environment(service: Client, storage: StorageRef | None = None, **more: str) -> dict[str, str]:
    env = {"KV_STORAGE_URL": str(service.make_url("")).rstrip("/"), **more}
    if storage is not None:
        env |= {"KV_STORAGE_STORAGE_ID": storage.id, "KV_STORAGE_SECRET_KEY": storage.secret_key}
    return env


async def kv(
    env: dict[str, str], *arguments: str, stdin: bytes | None = None
) -> tuple[int, str, str]:
    """Runs ``kv-storage kv ARGUMENTS`` (while this test's loop serves the service)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kv_storage",
        "kv",
        *arguments,
        env={"PATH": "/usr/bin:/bin", **env},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_set_get_delete_and_their_exit_codes(
    service: Client, create_storage: StorageFactory
) -> None:
    env = environment(service, await create_storage())
    code, etag, _ = await kv(env, "set", "greeting", "hello")
    assert code == EXIT_OK
    assert etag.strip().startswith('"')
    assert await kv(env, "get", "greeting") == (EXIT_OK, "hello\n", "")
    assert (await kv(env, "set", "poem", stdin="Grüße ✓\nline two\n".encode()))[0] == EXIT_OK
    assert (await kv(env, "get", "poem"))[1] == "Grüße ✓\nline two\n\n"
    code, out, _ = await kv(env, "-o", "json", "get", "greeting", "--etag")
    assert json.loads(out) == {"key": "greeting", "value": "hello", "etag": etag.strip()}
    code, out, err = await kv(env, "get", "missing")
    assert (code, out) == (EXIT_NOT_FOUND, "")
    assert "no key 'missing'" in err
    code, out, _ = await kv(env, "-o", "json", "get", "greeting", "missing")
    assert (code, json.loads(out)) == (EXIT_NOT_FOUND, {"greeting": "hello", "missing": None})

    assert (await kv(env, "set", "greeting", "x", "--if-absent"))[0] == EXIT_CONFLICT
    assert (await kv(env, "set", "greeting", "bye", "--if-match", etag.strip()))[0] == EXIT_OK
    code, _, err = await kv(env, "set", "greeting", "stale", "--if-match", etag.strip())
    assert code == EXIT_CONFLICT
    assert "(412)" in err
    assert (await kv(env, "get", "greeting"))[1] == "bye\n"
    assert (await kv(env, "-o", "json", "delete", "greeting", "poem"))[0] == EXIT_OK
    assert (await kv(env, "get", "greeting"))[0] == EXIT_NOT_FOUND


async def test_refused_unreachable_and_bad_usage(
    service: Client, create_storage: StorageFactory, tmp_path: Path
) -> None:
    storage = await create_storage()
    wrong = environment(service, StorageRef(storage.id, "not-the-secret"))
    code, _, err = await kv(wrong, "get", "k")
    assert code == EXIT_REFUSED
    assert "Secret-Key" in err
    gone = environment(service, StorageRef("no-such-storage", "s"))
    assert (await kv(gone, "get", "k"))[0] == EXIT_NOT_FOUND
    nowhere = {**environment(service, storage), "KV_STORAGE_URL": "http://127.0.0.1:9"}
    code, _, err = await kv(nowhere, "get", "k")
    assert code == EXIT_FAILURE
    assert "could not be reached" in err
    code, _, err = await kv(environment(service), "--storage", storage.id, "get", "k")
    assert code == EXIT_USAGE
    assert "KV_STORAGE_SECRET_KEY" in err
    # The secret has no option of its own: the command line is for everyone to read (ps).
    code, _, err = await kv(environment(service), "--secret", storage.secret_key, "get", "k")
    assert code == EXIT_USAGE
    assert "never on the command line" in err
    secret_file = tmp_path / "secret"
    secret_file.write_text(storage.secret_key + "\n")
    only_file = environment(service, KV_STORAGE_SECRET_KEY_FILE=str(secret_file))
    assert (await kv(only_file, "--storage", storage.id, "set", "k", "v"))[0] == EXIT_OK
    args = ("--storage", storage.id, "--secret-file", str(secret_file), "get", "k")
    assert await kv(environment(service), *args) == (EXIT_OK, "v\n", "")


async def test_list_by_prefix_history_and_clear(
    service: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage(history_enabled=True)
    env = environment(service, storage)
    async with AsyncClient(env["KV_STORAGE_URL"]) as client:
        await client.storage(storage.id, storage.secret_key).set_many(
            {"app/a": "1", "app/b": "2", "other": "3"}
        )

    async def listed() -> bool:  # pages see writes within a refresh
        return (await kv(env, "list", "--prefix", "app/", "--page-size", "1")) == (
            EXIT_OK,
            "app/a\napp/b\n",
            "",
        )

    await wait_until(listed, timeout_s=30, what="the keys to be listed")
    assert json.loads((await kv(env, "-o", "json", "list"))[1]) == ["app/a", "app/b", "other"]

    async def recorded() -> bool:
        return len((await kv(env, "history"))[1].splitlines()) == 3

    await wait_until(recorded, timeout_s=30, what="the history to be written")
    code, out, _ = await kv(env, "-o", "json", "history", "--key", "app/a", "--operation", "set")
    assert code == EXIT_OK
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert (record["key"], record["value"], record["operation"]) == ("app/a", "1", "set")
    assert (await kv(env, "clear"))[0] == EXIT_OK
    assert json.loads((await kv(env, "-o", "json", "get", "app/a", "other"))[1]) == {
        "app/a": None,
        "other": None,
    }


async def test_watch_prints_changes_and_keeps_the_secret_off_its_command_line(
    service: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    env = environment(service, storage)
    async with AsyncClient(env["KV_STORAGE_URL"]) as client:
        writer = client.storage(storage.id, storage.secret_key)
        await writer.set("mode", "blue")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kv_storage",
            "kv",
            "-o",
            "json",
            "watch",
            "mode",
            "--wait",
            "30",
            env={"PATH": "/usr/bin:/bin", **env},
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            command_line = await asyncio.to_thread(Path(f"/proc/{process.pid}/cmdline").read_bytes)
            assert storage.secret_key.encode() not in command_line
            assert process.stdout is not None

            async def waiting() -> bool:
                _, _, body = await client._http.request("GET", "/metrics")
                return "kv_storage_watch_waiters 1.0" in body.decode()

            await wait_until(waiting, timeout_s=30, what="the watch's blocking read")
            await writer.set("mode", "green")
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            change = json.loads(line)
            assert (change["value"], change["deleted"]) == ("green", False)
            await writer.delete("mode")
            change = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
            assert change["deleted"] is True
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(process.wait(), 30)
    assert code == EXIT_OK
