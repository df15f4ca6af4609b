"""``kv-storage storage create|show|list|delete|rotate-key``: the administration API's work
from the command line, through the same lifecycle actor (not through HTTP), with the
configuration ``serve`` uses."""

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from elasticsearch import AsyncElasticsearch
from marshmallow import ValidationError

from kv_storage.actors.base import Ask
from kv_storage.actors.lifecycle import (
    DeleteStorage,
    LifecycleActor,
    ListStorages,
    RotateSecret,
    ShowStorage,
    create_command,
)
from kv_storage.config import Config
from kv_storage.errors import ServiceError
from kv_storage.es.client import create_client
from kv_storage.es.data import DataStore, ScanSettings
from kv_storage.es.errors import describe, is_elasticsearch_error
from kv_storage.es.history import HistoryStore
from kv_storage.es.names import IndexNames
from kv_storage.es.registry import EntryPage, Registry, RegistryEntry
from kv_storage.handlers.admin import storage_view
from kv_storage.middlewares import describe_validation_error
from schemas.management import CreateStorageSchema

EXIT_FAILURE = 1
EXIT_USAGE = 2


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    storage = commands.add_parser("storage", help="Create, show, list, delete storages.")
    storage.add_argument("--config", type=Path, metavar="PATH", help="TOML configuration file")
    actions = storage.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a storage; prints it with its secret key")
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
        actions.add_parser(name, help=text).add_argument("storage_id", metavar="ID")
    listing = actions.add_parser("list", help="list an account's storages")
    listing.add_argument("--account", required=True)
    listing.add_argument("--page", type=int, default=1)
    listing.add_argument("--size", type=int, default=50)


def _message(args: argparse.Namespace) -> Ask[RegistryEntry | EntryPage]:
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
        if args.page < 1 or not 1 <= args.size <= 1000:
            raise ValidationError("--page must be at least 1 and --size between 1 and 1000")
        return ListStorages(args.account, args.page, args.size)
    if args.action == "show":
        return ShowStorage(args.storage_id)
    if args.action == "delete":
        return DeleteStorage(args.storage_id)
    return RotateSecret(args.storage_id)


def _render(action: str, result: RegistryEntry | EntryPage) -> Mapping[str, Any]:
    if isinstance(result, EntryPage):
        return {"total": result.total, "items": [storage_view(e) for e in result.entries]}
    if action in ("create", "rotate-key"):
        return {**storage_view(result), "secretKey": result.secret_key}
    return storage_view(result)


def lifecycle_actor(config: Config, client: AsyncElasticsearch) -> LifecycleActor:
    """The lifecycle actor of a command that runs outside the service: no cache to keep."""
    names = IndexNames(config.elasticsearch.index_prefix)
    scan = ScanSettings(config.elasticsearch.scroll_page_size, "1m")
    return LifecycleActor(
        registry=Registry(client, names),
        data=DataStore(client, names, scan),
        history=HistoryStore(client, names),
        cache=None,
        index_prefix=config.elasticsearch.index_prefix,
    )


async def run(config: Config, args: argparse.Namespace) -> int:
    try:
        message = _message(args)
    except ValidationError as error:
        print(f"kv-storage storage: {describe_validation_error(error)}", file=sys.stderr)
        return EXIT_USAGE
    # The transport's retry warnings would bury the one line that says what is wrong.
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    client = create_client(config.elasticsearch, request_timeout_s=30.0)
    lifecycle = lifecycle_actor(config, client)
    lifecycle.start()
    try:
        result = await lifecycle.ask(message)
    except ServiceError as error:
        print(f"kv-storage storage: {error.message}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:
        if not is_elasticsearch_error(error):
            raise
        print(f"kv-storage storage: {describe(error)}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        await lifecycle.stop()
        await client.close()
    print(json.dumps(_render(args.action, result), indent=2))
    return 0
