"""``kv-storage kv get|set|delete|list|watch|history|clear``: a storage's data from a shell,
through the HTTP API (``kv_storage_client``), as etcdctl and ``consul kv`` do for theirs.

Where the service is and which storage: ``--url`` (or ``KV_STORAGE_URL``), ``--storage`` (or
``KV_STORAGE_STORAGE_ID``). The secret is never an argument, which every user of the machine
could read in ``ps``: it comes from ``KV_STORAGE_SECRET_KEY``, or from the file named by
``--secret-file`` (or ``KV_STORAGE_SECRET_KEY_FILE``). Values come from the argument or, when
it is left out (or ``-``), from standard input. ``-o json`` prints JSON (one document per
line for ``watch`` and ``history``) instead of plain text.

The exit code says what happened, for scripts: ``EXIT_CODES``.
"""

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # the client (and aiohttp) load only when a kv command runs
    from kv_storage_client import AsyncStorage, KvStorageError

URL_ENV = "KV_STORAGE_URL"
STORAGE_ENV = "KV_STORAGE_STORAGE_ID"
SECRET_ENV = "KV_STORAGE_SECRET_KEY"
SECRET_FILE_ENV = "KV_STORAGE_SECRET_KEY_FILE"
DEFAULT_URL = "http://localhost:8080"

EXIT_OK = 0
EXIT_FAILURE = 1
"""The service or Elasticsearch failed, or could not be reached."""
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4
"""The secret is wrong (401), or the call is not allowed (403)."""
EXIT_CONFLICT = 5
"""A condition did not hold (412), or a clear kept keys written meanwhile (409)."""
EXIT_CODES = {
    "found, done": EXIT_OK,
    "failed": EXIT_FAILURE,
    "bad usage or input": EXIT_USAGE,
    "not found": EXIT_NOT_FOUND,
    "refused": EXIT_REFUSED,
    "condition failed": EXIT_CONFLICT,
}


class UsageError(Exception):
    """A missing setting (URL, storage, secret): the message says how to give it."""


class _RefuseSecret(argparse.Action):
    """``--secret``, which a user may well try: refused with what to do instead."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            f"the secret is never on the command line, where ps shows it to every user: set "
            f"{SECRET_ENV}, or give --secret-file (or {SECRET_FILE_ENV})"
        )


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    kv = commands.add_parser(
        "kv",
        allow_abbrev=False,  # --secret must not be read as --secret-file
        help="Read and write a storage's keys through the HTTP API.",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="exit codes: "
        + ", ".join(f"{code} {meaning}" for meaning, code in EXIT_CODES.items()),
    )
    kv.add_argument("--url", help=f"the service (default ${URL_ENV}, else {DEFAULT_URL})")
    kv.add_argument("--storage", metavar="ID", help=f"the storage (default ${STORAGE_ENV})")
    kv.add_argument(
        "--secret-file",
        type=Path,
        metavar="PATH",
        help=f"file holding the storage's secret (default ${SECRET_FILE_ENV}; or set "
        f"${SECRET_ENV})",
    )
    kv.add_argument("--secret", "--secret-key", action=_RefuseSecret, help=argparse.SUPPRESS)
    kv.add_argument("-o", "--output", choices=["text", "json"], default="text")
    actions = kv.add_subparsers(dest="action", required=True, metavar="ACTION")

    get = actions.add_parser("get", help="print the value of a key (or of several)")
    get.add_argument("keys", nargs="+", metavar="KEY")
    get.add_argument("--etag", action="store_true", help="also print the version (one key)")

    put = actions.add_parser("set", help="write a key; the value from VALUE or standard input")
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", nargs="?", default="-", metavar="VALUE")
    put.add_argument("--if-match", metavar="ETAG", help="only if the key is at this version")
    put.add_argument("--if-absent", action="store_true", help="only if the key does not exist")

    delete = actions.add_parser("delete", help="delete keys")
    delete.add_argument("keys", nargs="+", metavar="KEY")
    delete.add_argument("--if-match", metavar="ETAG", help="one key: only if at this version")

    listing = actions.add_parser("list", help="print the keys (by prefix), page by page")
    listing.add_argument("--prefix", default="", help="only the keys that start with it")
    listing.add_argument("--page-size", type=int, default=1000, metavar="N")

    watch = actions.add_parser("watch", help="print each change of a key as it happens")
    watch.add_argument("key", metavar="KEY")
    watch.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="of each blocking read (at most the service's app.watch.max-wait)",
    )

    history = actions.add_parser("history", help="print the history's records (a scroll)")
    history.add_argument("--key", action="append", dest="history_keys", metavar="KEY")
    history.add_argument(
        "--operation", action="append", choices=["set", "delete", "clear"], dest="operations"
    )
    history.add_argument("--start", type=int, metavar="MS", help="from (epoch ms, inclusive)")
    history.add_argument("--end", type=int, metavar="MS", help="to (epoch ms, inclusive)")

    actions.add_parser("clear", help="delete every key of the storage")


def run(args: argparse.Namespace, environ: dict[str, str] | None = None) -> int:
    """The command's exit code; what it prints goes to standard output, problems to
    standard error."""
    env = dict(os.environ if environ is None else environ)
    try:
        url, storage_id, secret = _where(args, env)
    except UsageError as error:
        print(f"kv-storage kv: {error}", file=sys.stderr)
        return EXIT_USAGE
    from kv_storage_client import KvStorageError

    printer = _Printer(args.output, sys.stdout)
    try:
        return asyncio.run(_run(args, url, storage_id, secret, printer))
    except KeyboardInterrupt:  # the end of a watch
        return EXIT_OK
    except KvStorageError as error:
        print(f"kv-storage kv: {error.message} ({error.status_code})", file=sys.stderr)
        return _exit_code(error)
    except UnicodeDecodeError:
        print("kv-storage kv: the value on standard input is not UTF-8", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, TimeoutError) as error:
        print(f"kv-storage kv: {url} could not be reached: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:  # aiohttp's connection errors, which are not OSErrors
        if type(error).__module__.startswith("aiohttp"):
            print(f"kv-storage kv: {url} could not be reached: {error}", file=sys.stderr)
            return EXIT_FAILURE
        raise


def _where(args: argparse.Namespace, env: dict[str, str]) -> tuple[str, str, str]:
    url = args.url or env.get(URL_ENV) or DEFAULT_URL
    storage_id = args.storage or env.get(STORAGE_ENV)
    if not storage_id:
        raise UsageError(f"which storage? give --storage or set {STORAGE_ENV}")
    secret_file = args.secret_file or (
        Path(env[SECRET_FILE_ENV]) if env.get(SECRET_FILE_ENV) else None
    )
    if secret_file is not None:
        try:
            secret = secret_file.read_text().strip()
        except OSError as error:
            raise UsageError(f"the secret file {secret_file}: {error.strerror}") from None
    else:
        secret = env.get(SECRET_ENV, "")
    if not secret:
        raise UsageError(
            f"the storage's secret: set {SECRET_ENV}, or give --secret-file (or "
            f"{SECRET_FILE_ENV}); never on the command line, where ps shows it"
        )
    return url, storage_id, secret


def _exit_code(error: "KvStorageError") -> int:
    from kv_storage_client import (
        ConflictError,
        ForbiddenError,
        NotFoundError,
        PreconditionFailedError,
        UnauthorizedError,
    )

    if isinstance(error, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, UnauthorizedError | ForbiddenError):
        return EXIT_REFUSED
    if isinstance(error, PreconditionFailedError | ConflictError):
        return EXIT_CONFLICT
    if error.status_code < 500:
        return EXIT_USAGE
    return EXIT_FAILURE


class _Printer:
    def __init__(self, output: str, stream: TextIO) -> None:
        self.json = output == "json"
        self._stream = stream

    def document(self, value: Any) -> None:
        self._stream.write(json.dumps(value, ensure_ascii=False) + "\n")
        self._stream.flush()

    def line(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()


async def _run(
    args: argparse.Namespace, url: str, storage_id: str, secret: str, printer: _Printer
) -> int:
    from kv_storage_client import AsyncClient

    async with AsyncClient(url) as client:
        storage = client.storage(storage_id, secret)
        return await _ACTIONS[args.action](storage, args, printer)


async def _get(storage: "AsyncStorage", args: argparse.Namespace, printer: _Printer) -> int:
    if len(args.keys) == 1:
        (key,) = args.keys
        found = await storage.get_versioned(key)
        if found is None:
            print(f"kv-storage kv: no key {key!r}", file=sys.stderr)
            return EXIT_NOT_FOUND
        if printer.json:
            document = {"key": key, "value": found.value}
            printer.document({**document, "etag": found.etag} if args.etag else document)
        else:
            printer.line(found.value)
            if args.etag:
                printer.line(found.etag)
        return EXIT_OK
    values = await storage.get_many(args.keys)
    if printer.json:
        printer.document(values)
    else:
        for key, value in values.items():
            if value is not None:
                printer.line(f"{key}\t{value}")
    return EXIT_OK if all(value is not None for value in values.values()) else EXIT_NOT_FOUND


async def _set(storage: "AsyncStorage", args: argparse.Namespace, printer: _Printer) -> int:
    value = sys.stdin.buffer.read().decode("utf-8") if args.value == "-" else args.value
    etag = await storage.set(args.key, value, if_match=args.if_match, if_absent=args.if_absent)
    if printer.json:
        printer.document({"key": args.key, "etag": etag})
    else:
        printer.line(etag)
    return EXIT_OK


async def _delete(storage: "AsyncStorage", args: argparse.Namespace, printer: _Printer) -> int:
    if args.if_match is not None and len(args.keys) != 1:
        print("kv-storage kv: --if-match takes one key", file=sys.stderr)
        return EXIT_USAGE
    if len(args.keys) == 1:
        await storage.delete(args.keys[0], if_match=args.if_match)
        deleted = {args.keys[0]: True}
    else:
        deleted = await storage.delete_many(args.keys)
    if printer.json:
        printer.document(deleted)
    return EXIT_OK


async def _list(storage: "AsyncStorage", args: argparse.Namespace, printer: _Printer) -> int:
    keys = storage.keys(args.prefix, page_size=args.page_size)
    if printer.json:
        printer.document([key async for key in keys])
    else:
        async for key in keys:
            printer.line(key)
    return EXIT_OK


async def _watch(storage: "AsyncStorage", args: argparse.Namespace, printer: _Printer) -> int:
    async for change in storage.watch(args.key, wait_s=args.wait):
        if printer.json:
            printer.document(
                {
                    "key": change.key,
                    "value": change.value,
                    "etag": change.etag,
                    "deleted": change.deleted,
                }
            )
        else:
            printer.line("(deleted)" if change.deleted else str(change.value))
    return EXIT_OK


async def _history(storage: "AsyncStorage", args: argparse.Namespace, printer: _Printer) -> int:
    records = storage.history(
        keys=args.history_keys, operations=args.operations, start=args.start, end=args.end
    )
    async for record in records:
        if printer.json:
            printer.document(
                {
                    "key": record.key,
                    "value": record.value,
                    "operation": record.operation,
                    "timestamp": record.timestamp,
                }
            )
        else:
            fields = (str(record.timestamp), record.operation, record.key or "", record.value or "")
            printer.line("\t".join(fields))
    return EXIT_OK


async def _clear(storage: "AsyncStorage", args: argparse.Namespace, printer: _Printer) -> int:
    await storage.clear()
    return EXIT_OK


_Action = Callable[["AsyncStorage", argparse.Namespace, _Printer], Awaitable[int]]
_ACTIONS: dict[str, _Action] = {
    "get": _get,
    "set": _set,
    "delete": _delete,
    "list": _list,
    "watch": _watch,
    "history": _history,
    "clear": _clear,
}
