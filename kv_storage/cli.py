"""The ``kv-storage`` command: ``serve``, ``init``, ``config``, ``storage``, ``kv``, ``export``
and ``import``.

The configuration is loaded once here; a bad value ends the command with one line naming the
property, never with a traceback.
"""

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kv_storage import admin_cli, data_cli, logs, transfer_cli
from kv_storage.config import CONFIG_PATH_ENV, PROPERTIES, Config, ConfigError, load_config
from kv_storage.config.loader import resolve_values, value_sources

if TYPE_CHECKING:  # loaded only by the commands that need it
    from kv_storage import wiring

logger = logging.getLogger("kv_storage")

EXIT_CONFIG_ERROR = 2
EXIT_FAILURE = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kv-storage",
        description="Key-value storages for Apache CloudStack, kept in Elasticsearch.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument(
            "--config",
            type=Path,
            metavar="PATH",
            help=f"TOML configuration file (default: ${CONFIG_PATH_ENV}, else built-in defaults)",
        )
        return command

    add("serve", "Run the HTTP service.")
    init = add(
        "init",
        "Create the Elasticsearch indices and templates that are missing and upgrade those an "
        "older version left; report each (created, upgraded from X to Y, up to date).",
    )
    init.add_argument(
        "--migrate",
        action="store_true",
        help="then fill in the key field of data written before layout version 2 (resumable, "
        "safe while the service serves): needed to list those storages by prefix in pages",
    )
    init.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="while Elasticsearch is unreachable or starting, try again for up to this long "
        "(for containers started together with it)",
    )
    show = add(
        "config",
        "Print the effective configuration (secrets masked), each value with where it comes "
        "from: default, PORT, the file, or its KV_STORAGE_* variable.",
    )
    show.add_argument(
        "--get", metavar="PROPERTY", help="print one property's raw value (secrets masked)"
    )
    show.add_argument(
        "--show-secrets", action="store_true", help="print secrets in clear instead of ***"
    )
    add("healthcheck", "Exit 0 when the local service answers /health (for containers).")
    admin_cli.add_commands(commands)
    data_cli.add_commands(commands)
    transfer_cli.add_commands(commands)
    return parser


def _serve(config: Config) -> int:
    from kv_storage.app import create_app
    from kv_storage.config.tls import server_ssl_context
    from kv_storage.garbage_collection import tune_for_serving
    from kv_storage.serving import serve
    from kv_storage.wiring import SERVE

    ssl_context = None
    if config.server.tls_cert_file is not None and config.server.tls_key_file is not None:
        ssl_context = server_ssl_context(config.server.tls_cert_file, config.server.tls_key_file)
    logger.info(
        "kv-storage listening on %s://%s:%d, Elasticsearch at %s",
        config.server.scheme,
        config.server.host,
        config.server.port,
        ", ".join(config.elasticsearch.hosts),
    )
    app = create_app(config, SERVE)
    tune_for_serving(app)
    serve(app, ssl_context=ssl_context)
    return 0


_WAIT_RETRY_S = 2.0


async def _initialise(config: Config, wait_s: float = 0.0, *, migrate: bool = False) -> int:
    """With ``wait_s``, an Elasticsearch that does not answer yet (or answers 503 while it
    starts) is asked again until then: compose tools that cannot wait for a health check
    (podman-compose on Podman before 4.6) start init together with Elasticsearch."""
    from kv_storage import wiring
    from kv_storage.es.errors import describe, is_elasticsearch_error, is_starting
    from kv_storage.es.provisioning import initialise

    # The transport's retry warnings would bury the one line below that says what is wrong.
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    service = wiring.Service(config, request_timeout_s=wiring.COMMAND_REQUEST_TIMEOUT_S)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    async with wiring.running(service, wiring.INIT):
        while True:
            try:
                steps = await initialise(
                    service.client,
                    config.elasticsearch.index_prefix,
                    shared_shards=config.elasticsearch.shared_shards,
                )
                break
            except Exception as error:
                if not is_elasticsearch_error(error):
                    raise
                if not (is_starting(error) and loop.time() < deadline):
                    print(f"kv-storage init: {describe(error)}", file=sys.stderr)
                    return EXIT_FAILURE
                await asyncio.sleep(_WAIT_RETRY_S)
        for step in steps:
            print(step)
        if migrate:
            try:
                await _migrate(service)
            except Exception as error:
                if not is_elasticsearch_error(error):
                    raise
                print(f"kv-storage init --migrate: {describe(error)}", file=sys.stderr)
                print("kv-storage init --migrate: run it again to go on", file=sys.stderr)
                return EXIT_FAILURE
    return 0


async def _migrate(service: "wiring.Service") -> None:
    from kv_storage.es.migration import KeyFieldMigration, Progress

    bar = sys.stderr.isatty()

    def show(progress: Progress) -> None:
        if bar:
            print(
                f"\rkey field: storage {progress.storages_done}/{progress.storages}, "
                f"{progress.updated} documents filled in",
                end="",
                file=sys.stderr,
                flush=True,
            )

    done = await KeyFieldMigration(service.client, service.names).run(show)
    if bar:
        print(file=sys.stderr)
    print(
        f"key field: filled in {done.updated} documents of {done.storages} storages; "
        f"{done.skipped} written or deleted meanwhile were left alone"
    )


def _show_config(path: Path | None, prop: str | None, *, show_secrets: bool) -> int:
    import os

    from kv_storage.config.show import MASK, as_toml

    values = resolve_values(path, os.environ)
    secrets = {p.name for p in PROPERTIES if p.secret}
    if prop is not None:
        if prop not in values:
            print(f"kv-storage config: unknown property {prop}", file=sys.stderr)
            return EXIT_CONFIG_ERROR
        if values[prop] is None:
            return EXIT_FAILURE
        hidden = prop in secrets and values[prop] and not show_secrets
        print(MASK if hidden else values[prop])
        return 0
    load_config(path)  # report invalid values before printing them
    sources = value_sources(path, os.environ)
    print(as_toml(values, sources, secrets, show_secrets=show_secrets), end="")
    return 0


def _healthcheck(config: Config) -> int:
    from kv_storage.healthcheck import check

    problem = check(config)
    if problem is not None:
        print(f"kv-storage healthcheck: {problem}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _warn_of_implausible_durations(path: Path | None) -> None:
    import os

    from kv_storage.config.plausibility import implausible_durations

    for warning in implausible_durations(resolve_values(path, os.environ)):
        logger.warning("configuration: %s", warning)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "kv":  # a client of the API: no configuration of the service's
        return data_cli.run(args)
    logs.configure("json")
    try:
        if args.command == "config":
            return _show_config(args.config, args.get, show_secrets=args.show_secrets)
        config = load_config(args.config)
        logs.configure(config.server.log_format)
        _warn_of_implausible_durations(args.config)
    except ConfigError as error:
        print(f"kv-storage: invalid configuration: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.command == "serve":
        return _serve(config)
    if args.command == "storage":
        return asyncio.run(admin_cli.run(config, args))
    if args.command == "healthcheck":
        return _healthcheck(config)
    if args.command == "export":
        return asyncio.run(transfer_cli.export(config, args))
    if args.command == "import":
        return transfer_cli.import_(config, args)
    return asyncio.run(_initialise(config, max(0.0, args.wait), migrate=args.migrate))


if __name__ == "__main__":
    sys.exit(main())
