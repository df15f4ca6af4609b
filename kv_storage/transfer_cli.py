"""``kv-storage export`` and ``kv-storage import``: a storage as JSON lines, for a backup or to
move it to another deployment, with the configuration ``serve`` uses (through Elasticsearch,
as ``kv-storage storage`` does: no secret needed, the operator's tool).

The format, one JSON object per line (``FORMAT``):

- first ``{"kvStorageExport": 1, "storage": {...}}``: the storage's record as the
  administration API shows it, with ``secretKey`` only if asked (``--with-secret``);
- then ``{"key": ..., "value": ...}`` per key and, with ``--history``,
  ``{"history": {"id", "key", "value", "operation", "timestamp"}}`` per record;
- last ``{"end": {"keys": N, "records": M}}``: without it the export was cut short.

An import writes into the storage of the export's id (or ``--into``), made from the record
if it does not exist. ``--on-conflict`` says what a key the storage holds with another value
does: ``fail`` (the default: stop before that page is written), ``skip`` (keep the storage's),
``overwrite``. It is resumable: after each page Elasticsearch acknowledged, its position is
kept in a progress file beside the export, so an import run again after a failure (or an
export cut short, then whole) goes on from there; every page can be written twice without
harm (``es.transfer``).
"""

import argparse
import json
import sys
from collections.abc import Awaitable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # the work loads the Elasticsearch client: only when it runs
    from kv_storage.config import Config
    from kv_storage.es.placement import Placement
    from kv_storage.es.registry import RegistryEntry
    from kv_storage.es.transfer import StorageTransfer
    from kv_storage.wiring import Service

FORMAT = 1
PAGE_LINES = 1000
PROGRESS_SUFFIX = ".import-progress"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 5


class ImportError_(Exception):
    """A problem of the import's input or target, said in one line; ``code`` its exit."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    export = commands.add_parser(
        "export", help="Write a storage as JSON lines (its record, keys and, optionally, history)."
    )
    export.add_argument("storage_id", metavar="ID")
    export.add_argument("--config", type=Path, metavar="PATH", help="TOML configuration file")
    export.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: stdout")
    export.add_argument("--history", action="store_true", help="with its history records")
    export.add_argument(
        "--with-secret", action="store_true", help="with its secret key (keep the file safe)"
    )
    imports = commands.add_parser(
        "import", help="Read an export into a storage (new, or existing); resumable."
    )
    imports.add_argument("file", type=Path, metavar="FILE", nargs="?")
    imports.add_argument(
        "--from-elasticsearch",
        metavar="URL",
        help="instead of FILE: every storage of a deployment of the original service, read "
        "from its Elasticsearch (6.x to 8.x) over plain HTTP",
    )
    imports.add_argument(
        "--source-prefix", default="", metavar="PREFIX", help="the source's index prefix"
    )
    imports.add_argument("--config", type=Path, metavar="PATH", help="TOML configuration file")
    imports.add_argument("--into", metavar="ID", help="this storage rather than the export's id")
    imports.add_argument(
        "--on-conflict",
        choices=["fail", "skip", "overwrite"],
        default="fail",
        help="a key the storage holds with another value: stop (default), keep it, or write",
    )
    imports.add_argument(
        "--progress-file",
        type=Path,
        metavar="PATH",
        help=f"where the position is kept (default: FILE{PROGRESS_SUFFIX})",
    )


async def export(config: "Config", args: argparse.Namespace) -> int:
    from kv_storage.es.errors import describe, is_elasticsearch_error
    from kv_storage.es.placement import place
    from kv_storage.es.registry import storage_view
    from kv_storage.es.transfer import StorageTransfer
    from kv_storage.model import Location
    from kv_storage.wiring import COMMAND, COMMAND_REQUEST_TIMEOUT_S, Service, running

    service = Service(config, request_timeout_s=COMMAND_REQUEST_TIMEOUT_S)
    try:
        async with running(service, COMMAND):
            entry = await service.registry.read(args.storage_id)
            if entry is None or entry.deleted:
                print(f"kv-storage export: no storage {args.storage_id}", file=sys.stderr)
                return EXIT_NOT_FOUND
            record: dict[str, Any] = dict(storage_view(entry))
            if args.with_secret:
                record["secretKey"] = entry.secret_key
            transfer = StorageTransfer(service.client, page_size=PAGE_LINES)
            where = place(service.names, Location(entry.id, entry.layout))
            with _opened(args.output) as out:
                keys, records = await _write_export(
                    out, record, transfer, where, history=args.history and entry.history_enabled
                )
    except Exception as error:
        if not is_elasticsearch_error(error):
            raise
        print(f"kv-storage export: {describe(error)}", file=sys.stderr)
        return EXIT_FAILURE
    print(
        f"kv-storage export: {keys} keys and {records} history records of storage {entry.id}",
        file=sys.stderr,
    )
    return EXIT_OK


class _opened:
    """The output file, or stdout (left open)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._file: IO[str] | None = None

    def __enter__(self) -> IO[str]:
        if self._path is None:
            return sys.stdout
        self._file = self._path.open("w", encoding="utf-8")
        return self._file

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


def _line(document: Any) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n"


async def _write_export(
    out: IO[str],
    record: dict[str, Any],
    transfer: "StorageTransfer",
    where: "Placement",
    *,
    history: bool,
) -> tuple[int, int]:
    out.write(_line({"kvStorageExport": FORMAT, "storage": record}))
    keys = records = 0
    async for pairs in transfer.key_pages(where):
        out.writelines(_line({"key": key, "value": value}) for key, value in pairs)
        keys += len(pairs)
    if history:
        async for page in transfer.record_pages(where):
            out.writelines(_line({"history": {"id": rid, **rec}}) for rid, rec in page)
            records += len(page)
    out.write(_line({"end": {"keys": keys, "records": records}}))
    return keys, records


@dataclass
class Progress:
    """What is kept between two runs of one import."""

    target: str
    offset: int = 0
    """Bytes of the export done: the next run starts here."""
    keys: int = 0
    skipped: int = 0
    records: int = 0
    present: int = 0
    not_kept: int = 0
    key_lines: int = 0
    record_lines: int = 0


@dataclass
class _Page:
    pairs: list[tuple[str, str]]
    records: list[tuple[str, dict[str, Any]]]
    end_offset: int
    end: dict[str, int] | None = None


MIGRATION_PROGRESS = Path("kv-storage-migration.progress")
"""Where ``import --from-elasticsearch`` keeps the storages it finished (default)."""


def import_(config: "Config", args: argparse.Namespace) -> int:
    """Runs the import; the progress file goes once it is done."""
    import asyncio

    if (args.file is None) == (args.from_elasticsearch is None):
        print("kv-storage import: give an export FILE or --from-elasticsearch URL", file=sys.stderr)
        return EXIT_USAGE
    progress_path: Path
    if args.from_elasticsearch is not None:
        progress_path = args.progress_file or MIGRATION_PROGRESS
        code = asyncio.run(_reporting(_migrate(config, args, progress_path)))
        if code == EXIT_OK:
            progress_path.unlink(missing_ok=True)
        return code
    progress_path = args.progress_file or args.file.with_name(args.file.name + PROGRESS_SUFFIX)
    try:
        size = args.file.stat().st_size
    except OSError as error:
        print(f"kv-storage import: {args.file}: {error.strerror}", file=sys.stderr)
        return EXIT_USAGE
    code = asyncio.run(_reporting(_import(config, args, progress_path, size)))
    if code == EXIT_OK:
        progress_path.unlink(missing_ok=True)
    return code


async def _reporting(work: Awaitable[int]) -> int:
    """``work``'s exit code, its failures said in one line."""
    from kv_storage.errors import ServiceError
    from kv_storage.es.errors import describe, is_elasticsearch_error
    from kv_storage.es.original import SourceError
    from kv_storage.es.transfer import ConflictingKeysError

    try:
        return await work
    except (ImportError_, SourceError) as error:
        print(f"kv-storage import: {error}", file=sys.stderr)
        return error.code if isinstance(error, ImportError_) else EXIT_FAILURE
    except ConflictingKeysError as error:
        print(
            f"kv-storage import: {error}; nothing of their page was written (--on-conflict "
            "skip or overwrite to go on)",
            file=sys.stderr,
        )
        return EXIT_CONFLICT
    except ServiceError as error:
        print(f"kv-storage import: {error.message}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:
        if not is_elasticsearch_error(error):
            raise
        print(f"kv-storage import: {describe(error)}; run it again to go on", file=sys.stderr)
        return EXIT_FAILURE


async def _import(
    config: "Config", args: argparse.Namespace, progress_path: Path, size: int
) -> int:
    from kv_storage.es.placement import place
    from kv_storage.es.transfer import OnConflict, StorageTransfer
    from kv_storage.model import Location
    from kv_storage.wiring import COMMAND, COMMAND_REQUEST_TIMEOUT_S, Service, running

    path: Path = args.file
    try:
        source = path.open("rb")
    except OSError as error:
        raise ImportError_(f"{path}: {error.strerror}", EXIT_USAGE) from None
    with source:
        header = _header(source.readline(), path)
        target = args.into or header["id"]
        progress = _resumed(progress_path, Progress(target), "target")
        service = Service(config, request_timeout_s=COMMAND_REQUEST_TIMEOUT_S)
        async with running(service, COMMAND):
            entry = await _target(service, header, target)
            where = place(service.names, Location(entry.id, entry.layout))
            transfer = StorageTransfer(service.client, page_size=PAGE_LINES)
            if progress.offset:
                source.seek(progress.offset)
                print(f"kv-storage import: going on from byte {progress.offset}", file=sys.stderr)
            end: dict[str, int] | None = None
            for page in _pages(source, path, config):
                written = await transfer.write_keys(where, page.pairs, OnConflict(args.on_conflict))
                progress.keys += written.written
                progress.skipped += written.skipped
                progress.key_lines += len(page.pairs)
                progress.record_lines += len(page.records)
                if entry.history_enabled:
                    kept = await transfer.write_records(where, page.records)
                    progress.records += kept.created
                    progress.present += kept.present
                else:
                    progress.not_kept += len(page.records)
                progress.offset = page.end_offset
                _keep(progress_path, progress)
                _show(progress, size)
                end = page.end
            await transfer.refresh(where)  # what it says it imported, a search finds
    if end is None:
        raise ImportError_(
            f"{path} ends before its end line: the export was cut short. What it held is "
            f"imported; import the whole export (same progress file, {progress_path}) to go on"
        )
    if (progress.key_lines, progress.record_lines) != (end["keys"], end["records"]):
        raise ImportError_(
            f"{path} holds {progress.key_lines} keys and {progress.record_lines} records, its "
            f"end line says {end['keys']} and {end['records']}: the file was changed"
        )
    summary = {
        "storage": entry.id,
        **{
            k: v
            for k, v in asdict(progress).items()
            if k not in ("target", "offset", "key_lines", "record_lines")
        },
    }
    print(json.dumps(summary))
    return EXIT_OK


def _header(line: bytes, path: Path) -> dict[str, Any]:
    try:
        document = json.loads(line)
        storage = document["storage"]
        if document.get("kvStorageExport") != FORMAT or not isinstance(storage, dict):
            raise ValueError
        if not isinstance(storage.get("id"), str):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ImportError_(
            f"{path} is not an export of kv-storage (its first line must be "
            f'{{"kvStorageExport": {FORMAT}, "storage": ...}})',
            EXIT_USAGE,
        ) from None
    return storage


_Kept = TypeVar("_Kept", "Progress", "Migration")


def _resumed(path: Path, fresh: _Kept, of: str) -> _Kept:
    """What ``path`` kept of an earlier run of the same work (``fresh``'s field ``of`` names
    it: the target storage, or the source), or ``fresh`` when there is none."""
    try:
        kept = json.loads(path.read_text())
    except FileNotFoundError:
        return fresh
    except (OSError, ValueError):
        raise ImportError_(
            f"the progress file {path} is unreadable; remove it", EXIT_USAGE
        ) from None
    wanted = getattr(fresh, of)
    if not isinstance(kept, dict) or kept.get(of) != wanted:
        found = kept.get(of) if isinstance(kept, dict) else None
        raise ImportError_(
            f"the progress file {path} is of other work ({of} {found}, not {wanted}); "
            "remove it, or give another --progress-file",
            EXIT_USAGE,
        )
    return type(fresh)(**kept)


def _keep(path: Path, progress: "Progress | Migration") -> None:
    """Written whole then renamed: a crash leaves the old position or the new one."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(asdict(progress)))
    partial.replace(path)


def _show(progress: Progress, size: int) -> None:
    if sys.stderr.isatty():
        share = 100 * progress.offset // max(size, 1)
        print(
            f"\rimport: {share}% ({progress.key_lines} keys, {progress.record_lines} records)",
            end="",
            file=sys.stderr,
            flush=True,
        )


async def _target(service: "Service", header: dict[str, Any], target: str) -> "RegistryEntry":
    """The storage to import into: it exists, or is made from the export's record."""
    from kv_storage.actors.lifecycle import CreateStorage
    from kv_storage.model import StorageType

    entry = await service.registry.read(target)
    if entry is not None and entry.deleted:
        raise ImportError_(f"storage {target} was deleted; import --into another id")
    if entry is not None:
        return entry
    try:
        kind = StorageType(str(header.get("type")))
    except ValueError:
        raise ImportError_(
            f"the export's type {header.get('type')!r} is unknown", EXIT_USAGE
        ) from None
    created = await service.lifecycle.ask(
        CreateStorage(
            type=kind,
            history_enabled=bool(header.get("historyEnabled")),
            account=header.get("account"),
            name=header.get("name"),
            description=header.get("description"),
            vm=target if kind is StorageType.VM else None,
            ttl_ms=header.get("ttl"),
            storage_id=target,
            secret_key=header.get("secretKey"),
            expiration_timestamp_ms=header.get("expirationTimestamp"),
        )
    )
    given = "as it was" if header.get("secretKey") else "a new one"
    print(f"kv-storage import: created storage {created.id}, secret key {given}", file=sys.stderr)
    if not header.get("secretKey"):
        print(json.dumps({"id": created.id, "secretKey": created.secret_key}))
    return created


def _pages(source: IO[bytes], path: Path, config: "Config") -> Iterator[_Page]:
    """The export's lines, checked, a page at a time (each ends where a line ends)."""
    key_limit = config.elasticsearch.key_max_bytes
    value_limit = config.elasticsearch.value_max_bytes
    page = _Page([], [], source.tell())
    while line := source.readline():
        number_hint = f"{path} at byte {page.end_offset}"
        document = _document(line, number_hint)
        if "key" in document:
            page.pairs.append(_pair(document, number_hint, key_limit, value_limit))
        elif "history" in document:
            page.records.append(_record(document["history"], number_hint))
        elif "end" in document:
            counts = document["end"]
            if not isinstance(counts, dict) or not all(
                isinstance(counts.get(n), int) for n in ("keys", "records")
            ):
                raise ImportError_(f"{number_hint}: the end line is malformed", EXIT_USAGE)
            page.end = {"keys": counts["keys"], "records": counts["records"]}
        else:
            raise ImportError_(f"{number_hint}: a line of an unknown kind", EXIT_USAGE)
        page.end_offset = source.tell()
        if page.end is not None or len(page.pairs) + len(page.records) >= PAGE_LINES:
            yield page
            if page.end is not None:
                return
            page = _Page([], [], page.end_offset)
    if page.pairs or page.records:
        yield page


def _document(line: bytes, where: str) -> dict[str, Any]:
    try:
        document = json.loads(line)
    except ValueError:
        raise ImportError_(f"{where}: not a JSON line", EXIT_USAGE) from None
    if not isinstance(document, dict):
        raise ImportError_(f"{where}: not a JSON object", EXIT_USAGE)
    return document


def _pair(
    document: dict[str, Any], where: str, key_limit: int, value_limit: int | None
) -> tuple[str, str]:
    key, value = document.get("key"), document.get("value")
    if not isinstance(key, str) or not key or len(key.encode("utf-8", "surrogatepass")) > key_limit:
        raise ImportError_(
            f"{where}: the key must be a non-empty string of at most {key_limit} bytes",
            EXIT_USAGE,
        )
    if not isinstance(value, str) or (
        value_limit is not None and len(value.encode("utf-8", "surrogatepass")) > value_limit
    ):
        raise ImportError_(
            f"{where}: the value of {key!r} is not a string within the limit", EXIT_USAGE
        )
    return key, value


_OPERATIONS = frozenset({"set", "delete", "clear"})


def _record(record: Any, where: str) -> tuple[str, dict[str, Any]]:
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("id"), str)
        or record.get("operation") not in _OPERATIONS
        or not isinstance(record.get("timestamp"), int)
    ):
        raise ImportError_(
            f"{where}: a history record needs an id, an operation (set, delete, clear) and "
            "an integer timestamp",
            EXIT_USAGE,
        )
    fields = {name: record.get(name) for name in ("key", "value", "operation", "timestamp")}
    return record["id"], fields


@dataclass
class Migration:
    """What is kept between two runs of one migration: the storages done, and the counts."""

    source: str
    done: list[str]
    storages: int = 0
    deleted: int = 0
    """Storages the source had marked deleted: not carried over."""
    keys: int = 0
    skipped: int = 0
    records: int = 0
    present: int = 0


def original_header(storage_id: str, document: dict[str, Any]) -> dict[str, Any]:
    """A registry document of the original as an export's record (its secret included)."""
    return {
        "id": storage_id,
        "type": document.get("type"),
        "historyEnabled": bool(document.get("history_enabled")),
        "account": document.get("account"),
        "name": document.get("name"),
        "description": document.get("description"),
        "ttl": document.get("ttl"),
        "expirationTimestamp": document.get("expiration_timestamp"),
        "secretKey": document.get("secret_key"),
    }


async def _migrate(config: "Config", args: argparse.Namespace, progress_path: Path) -> int:
    """Every storage of the source, one after the other; a storage cut short is done again
    whole (each page can be written twice), the finished ones are not."""
    import aiohttp

    from kv_storage.es.original import OriginalDeployment
    from kv_storage.es.placement import place
    from kv_storage.es.transfer import OnConflict, StorageTransfer
    from kv_storage.model import Location
    from kv_storage.wiring import COMMAND, COMMAND_REQUEST_TIMEOUT_S, Service, running

    url: str = args.from_elasticsearch
    progress = _resumed(progress_path, Migration(url, []), "source")
    done = set(progress.done)
    on_conflict = OnConflict(args.on_conflict)
    key_limit = config.elasticsearch.key_max_bytes
    value_limit = config.elasticsearch.value_max_bytes
    service = Service(config, request_timeout_s=COMMAND_REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession() as session, running(service, COMMAND):
        source = OriginalDeployment(session, url, prefix=args.source_prefix, page_size=PAGE_LINES)
        transfer = StorageTransfer(service.client, page_size=PAGE_LINES)
        async for page in source.storages():
            for storage_id, document in page:
                if storage_id in done:
                    continue
                if document.get("deleted"):
                    progress.deleted += 1
                else:
                    entry = await _target(
                        service, original_header(storage_id, document), storage_id
                    )
                    where = place(service.names, Location(entry.id, entry.layout))
                    async for pairs in source.key_pages(storage_id):
                        checked = [
                            _pair(
                                {"key": k, "value": v},
                                f"storage {storage_id}",
                                key_limit,
                                value_limit,
                            )
                            for k, v in pairs
                        ]
                        written = await transfer.write_keys(where, checked, on_conflict)
                        progress.keys += written.written
                        progress.skipped += written.skipped
                    if entry.history_enabled:
                        async for records in source.record_pages(storage_id):
                            kept = await transfer.write_records(
                                where,
                                [
                                    _record({"id": i, **r}, f"storage {storage_id}")
                                    for i, r in records
                                ],
                            )
                            progress.records += kept.created
                            progress.present += kept.present
                    await transfer.refresh(where)
                    progress.storages += 1
                done.add(storage_id)
                progress.done.append(storage_id)
                _keep(progress_path, progress)
    summary = {k: v for k, v in asdict(progress).items() if k not in ("source", "done")}
    print(json.dumps(summary))
    return EXIT_OK
