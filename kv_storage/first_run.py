"""A first run that works: what ``make run`` does on the local development Elasticsearch.

``scripts/run.sh`` runs this (``python -m kv_storage.first_run``) only when it uses the local
node it manages, never with a configured Elasticsearch, and before ``kv-storage serve``, in
the same environment, so the configuration loaded here is the one the service will run with.
It makes sure a demo storage exists (ACCOUNT, history on) and prints a short block with the
service's address, the Swagger UI, the administration token (only when ``run.sh`` made it for
this run: a configured token is not ours to print), the demo storage's id and secret, and two
``curl`` lines that work as printed once the service is up. Printing secrets is the point
here: they are a local development node's, shown to the developer who started it.

The demo storage's id is remembered under the state folder, per local node and index prefix,
so that every run finds the same storage (and its data) again; its secret is read from the
registry each time, so a rotated secret is shown as it is now.
"""

import argparse
import asyncio
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from kv_storage.actors.lifecycle import CreateStorage
from kv_storage.config import Config, ConfigError, load_config
from kv_storage.es.errors import describe, is_elasticsearch_error
from kv_storage.es.registry import RegistryEntry
from kv_storage.handlers.docs import UI_PATH as SWAGGER_UI_PATH
from kv_storage.model import StorageType
from kv_storage.wiring import COMMAND, COMMAND_REQUEST_TIMEOUT_S, Service, running

DEMO = CreateStorage(
    type=StorageType.ACCOUNT,
    history_enabled=True,
    account="demo",
    name="demo",
    description="Made by `make run` for trying the service out",
)
DEMO_KEY = "greeting"
DEMO_VALUE = "Hello from kv-storage"
_RULE = "-" * 78


def state_file(state_dir: Path, node: str, index_prefix: str) -> Path:
    """Where the demo storage's id is remembered: one file per local node and index prefix."""
    return state_dir / f"{node}.{index_prefix}demo-storage.json"


def _remembered_id(path: Path) -> str | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    storage_id = document.get("id") if isinstance(document, dict) else None
    return storage_id if isinstance(storage_id, str) and storage_id else None


def _remember(path: Path, storage_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"id": storage_id}) + "\n")


async def demo_storage(config: Config, state: Path) -> RegistryEntry:
    """The demo storage remembered in ``state`` if it still exists, else a new one."""
    async with running(
        Service(config, request_timeout_s=COMMAND_REQUEST_TIMEOUT_S), COMMAND
    ) as service:
        remembered = _remembered_id(state)
        if remembered is not None:
            entry = await service.registry.read(remembered)
            if entry is not None and not entry.deleted:
                return entry
        created = await service.lifecycle.ask(DEMO)
    _remember(state, created.id)
    return created


def service_url(config: Config) -> str:
    """The address a developer on this machine reaches the service at."""
    host = config.server.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}"


KV_COMMAND = ".venv/bin/kv-storage"
"""The data command line, as a developer in the checkout runs it."""


def welcome(config: Config, storage: RegistryEntry, *, admin_token: str | None) -> str:
    """The block printed before the service's own log lines."""
    base = service_url(config)
    secret = shlex.quote(f"Secret-Key: {storage.secret_key}")
    key_url = shlex.quote(f"{base}/set/{storage.id}/{DEMO_KEY}")
    get_url = shlex.quote(f"{base}/get/{storage.id}/{DEMO_KEY}")
    token = admin_token if admin_token is not None else "(admin.token as configured, not shown)"
    lines = [
        _RULE,
        "kv-storage, local development run",
        "",
        f"  Service        {base}",
        *([f"  Swagger UI     {base}{SWAGGER_UI_PATH}"] if config.app.docs_enabled else []),
        f"  Elasticsearch  {', '.join(config.elasticsearch.hosts)} (the local node)",
        f"  Admin token    {token}",
        f"  Demo storage   {storage.id} (ACCOUNT, history on)",
        f"  Its secret     {storage.secret_key}",
        "",
        "Once the service is up, store a value and read it back:",
        "",
        f"curl -w '%{{http_code}}\\n' -X PUT -H {secret} -H 'Content-Type: text/plain' "
        f"--data-binary {shlex.quote(DEMO_VALUE)} {key_url}",
        f"curl -w '\\n' -H {secret} {get_url}",
        "",
        "Or with kv-storage kv (the secret from the environment, never an argument):",
        "",
        f"export KV_STORAGE_URL={shlex.quote(base)} KV_STORAGE_STORAGE_ID={storage.id} "
        f"KV_STORAGE_SECRET_KEY={shlex.quote(storage.secret_key)}",
        f"{KV_COMMAND} kv get {DEMO_KEY}",
        _RULE,
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kv_storage.first_run",
        description="Make sure the demo storage exists and print how to use the service "
        "(scripts/run.sh, on the local development Elasticsearch only).",
    )
    parser.add_argument("--state-dir", type=Path, required=True, help="where the id is kept")
    parser.add_argument("--node", required=True, help="the local Elasticsearch node's name")
    parser.add_argument(
        "--show-admin-token",
        action="store_true",
        help="print admin.token: run.sh made it for this run",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config()
    except ConfigError as error:
        print(f"first run: invalid configuration: {error}", file=sys.stderr)
        return 2
    state = state_file(args.state_dir, args.node, config.elasticsearch.index_prefix)
    try:
        storage = asyncio.run(demo_storage(config, state))
    except Exception as error:
        if not is_elasticsearch_error(error):
            raise
        print(f"first run: no demo storage: {describe(error)}", file=sys.stderr)
        return 1
    token = config.admin.token if args.show_admin_token else None
    print(welcome(config, storage, admin_token=token), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
