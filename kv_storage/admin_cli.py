"""``kv-storage storage create|show|list|delete|rotate-key|move``: the administration API's work
from the command line, through the same lifecycle actor (not through HTTP), with the
configuration ``serve`` uses."""

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the work itself loads the Elasticsearch client: only when it runs
    from kv_storage.config import Config
    from kv_storage.es.registry import EntryPage, RegistryEntry
    from kv_storage.wiring import Service
    from pipeline.mailbox import Ask

EXIT_FAILURE = 1
EXIT_USAGE = 2


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    storage = commands.add_parser("storage", help="Create, show, list, delete storages.")
    storage.add_argument("--config", type=Path, metavar="PATH", help="TOML configuration file")
    actions = storage.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a storage; prints it with its secret key")
    config_anywhere = [create]
    create.add_argument("--type", required=True, choices=["ACCOUNT", "VM", "TEMP"])
    create.add_argument("--account", help="ACCOUNT: the account")
    create.add_argument("--name", help="ACCOUNT: the storage's name")
    create.add_argument("--description", help="ACCOUNT: a description")
    create.add_argument("--vm", help="VM: the virtual machine's id (the storage's id)")
    create.add_argument("--ttl", type=int, help="TEMP: time to live in ms")
    create.add_argument("--history", action="store_true", help="ACCOUNT, VM: keep a history")
    for name, text in (
        ("show", "print a storage's metadata"),
        ("delete", "delete a storage"),
        ("rotate-key", "give a storage a new secret key; prints it"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("storage_id", metavar="ID")
        config_anywhere.append(action)
    move = actions.add_parser(
        "move",
        help="move a storage (or --all) from indices of its own into the shared ones, while "
        "the service serves it; prints a report per storage",
    )
    move.add_argument("storage_id", metavar="ID", nargs="?")
    move.add_argument(
        "--all", action="store_true", help="every storage not in the shared layout yet"
    )
    config_anywhere.append(move)
    listing = actions.add_parser("list", help="list an account's storages")
    config_anywhere.append(listing)
    listing.add_argument("--account", required=True)
    listing.add_argument("--page", help="from 1 (default 1)")
    listing.add_argument("--size", help="storages per page, 1 to 1000 (default 50)")
    for (
        action
    ) in config_anywhere:  # `storage create --config F` as well as `storage --config F create`
        action.add_argument(
            "--config", type=Path, metavar="PATH", help=argparse.SUPPRESS, default=argparse.SUPPRESS
        )


def _message(args: argparse.Namespace) -> "Ask[RegistryEntry | EntryPage]":
    """The lifecycle actor's message, its arguments checked by the API's own schemas."""
    from marshmallow import ValidationError

    try:
        return _checked_message(args)
    except ValidationError as error:  # named as the command line names them: --size, ...
        messages = error.messages if isinstance(error.messages, dict) else {"": error.messages}
        named = {_OPTIONS.get(str(k), f"--{k}"): v for k, v in messages.items()}
        raise ValidationError(named) from None


_OPTIONS = {"historyEnabled": "--history", "": "arguments"}


def _checked_message(args: argparse.Namespace) -> "Ask[RegistryEntry | EntryPage]":
    from kv_storage.actors.lifecycle import (
        DeleteStorage,
        ListStorages,
        RotateSecret,
        ShowStorage,
        create_command,
    )
    from schemas.management import CreateStorageSchema, StorageListQuerySchema

    if args.action == "create":
        fields = {
            "type": args.type,
            "account": args.account,
            "name": args.name,
            "description": args.description,
            "vm": args.vm,
            "ttl": args.ttl,
            "historyEnabled": args.history,
        }
        return create_command(
            CreateStorageSchema().load({k: v for k, v in fields.items() if v is not None})
        )
    if args.action == "list":
        given = {"account": args.account, "page": args.page, "size": args.size}
        query = StorageListQuerySchema().load({k: v for k, v in given.items() if v is not None})
        return ListStorages(query["account"], query["page"], query["size"])
    if args.action == "show":
        return ShowStorage(args.storage_id)
    if args.action == "delete":
        return DeleteStorage(args.storage_id)
    return RotateSecret(args.storage_id)


def _render(
    message: "Ask[RegistryEntry | EntryPage]", action: str, result: "RegistryEntry | EntryPage"
) -> Mapping[str, Any]:
    """What the administration API answers for the same work."""
    from kv_storage.actors.lifecycle import ListStorages
    from kv_storage.es.registry import EntryPage, storage_view

    if isinstance(result, EntryPage):
        page = message.page if isinstance(message, ListStorages) else 1
        items = [storage_view(e) for e in result.entries]
        return {"total": result.total, "page": page, "size": len(items), "items": items}
    if action == "rotate-key":  # as the administration API answers it
        return {"id": result.id, "secretKey": result.secret_key}
    if action == "create":
        return {**storage_view(result), "secretKey": result.secret_key}
    return storage_view(result)


async def _move(config: "Config", args: argparse.Namespace) -> int:
    """One JSON line per storage, as each move ends (a move takes seconds at least: it waits
    for every instance to see each change of the registry)."""
    from kv_storage.wiring import COMMAND, COMMAND_REQUEST_TIMEOUT_S, Service, running

    if (args.storage_id is None) == (not args.all):
        print("kv-storage storage move: give a storage ID or --all", file=sys.stderr)
        return EXIT_USAGE
    service = Service(config, request_timeout_s=COMMAND_REQUEST_TIMEOUT_S)
    failed = 0
    tried: set[str] = set()
    async with running(service, COMMAND):
        registry = service.registry

        async def next_ids() -> list[str]:
            """Up to 10,000 at a time: those moved leave the registry's answer."""
            if args.storage_id is not None:
                return [] if tried else [args.storage_id]
            return [i for i in await registry.not_shared() if i not in tried]

        while ids := await next_ids():
            for storage_id in ids:
                tried.add(storage_id)
                failed += not await _move_one(service, storage_id)
    return EXIT_FAILURE if failed else 0


async def _move_one(service: "Service", storage_id: str) -> bool:
    from kv_storage.actors.lifecycle import MoveReport, MoveStorage
    from kv_storage.errors import ServiceError
    from kv_storage.es.errors import describe, is_elasticsearch_error

    try:
        report: MoveReport = await service.lifecycle.ask(MoveStorage(storage_id))
    except ServiceError as error:
        print(json.dumps({"id": storage_id, "error": error.message}), flush=True)
        return False
    except Exception as error:
        if not is_elasticsearch_error(error):
            raise
        print(json.dumps({"id": storage_id, "error": describe(error)}), flush=True)
        return False
    print(
        json.dumps(
            {
                "id": report.storage_id,
                "outcome": report.outcome,
                "keys": report.keys,
                "records": report.records,
                "seconds": report.seconds,
            }
        ),
        flush=True,
    )
    return True


async def run(config: "Config", args: argparse.Namespace) -> int:
    from marshmallow import ValidationError

    from kv_storage.errors import ServiceError
    from kv_storage.es.errors import describe, is_elasticsearch_error
    from kv_storage.middlewares import describe_validation_error
    from kv_storage.wiring import COMMAND, COMMAND_REQUEST_TIMEOUT_S, Service, running

    if args.action == "move":
        logging.getLogger("elastic_transport").setLevel(logging.ERROR)
        return await _move(config, args)
    try:
        message = _message(args)
    except ValidationError as error:
        print(f"kv-storage storage: {describe_validation_error(error)}", file=sys.stderr)
        return EXIT_USAGE
    # The transport's retry warnings would bury the one line that says what is wrong.
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    service = Service(config, request_timeout_s=COMMAND_REQUEST_TIMEOUT_S)
    try:
        async with running(service, COMMAND):
            result = await service.lifecycle.ask(message)
    except ServiceError as error:
        print(f"kv-storage storage: {error.message}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:
        if not is_elasticsearch_error(error):
            raise
        print(f"kv-storage storage: {describe(error)}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(_render(message, args.action, result), indent=2))
    return 0
