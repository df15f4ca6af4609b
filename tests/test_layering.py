"""Imports flow one way: handlers -> actors -> es, and pipeline and schemas stand alone.

Read from the source (every ``import`` statement, also those inside functions), so that a
module reaching back up fails here, not as an import cycle that only an unlucky import order
reveals.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

_HTTP_LAYER = (
    "kv_storage.handlers",
    "kv_storage.app",
    "kv_storage.app_keys",
    "kv_storage.middlewares",
    "kv_storage.envelope",
    "kv_storage.validation",
    "kv_storage.headers",
)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "pipeline": ("kv_storage",),
    "schemas": ("kv_storage", "pipeline"),
    "kv_storage.es": ("kv_storage.actors", *_HTTP_LAYER),
    "kv_storage.actors": _HTTP_LAYER,
    "kv_storage.config": ("kv_storage.actors", "kv_storage.es", *_HTTP_LAYER),
}
"""Package -> what no module in it may import."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _sources() -> list[Path]:
    return sorted(
        path for top in ("kv_storage", "pipeline", "schemas") for path in (ROOT / top).rglob("*.py")
    )


def test_no_module_imports_against_the_flow() -> None:
    breaches = [
        f"{_module_name(path)} imports {name}"
        for path in _sources()
        for package, forbidden in FORBIDDEN.items()
        if _within(_module_name(path), package)
        for name in sorted(_imports(path))
        if any(_within(name, banned) for banned in forbidden)
    ]
    assert breaches == []


def test_the_check_sees_a_breach(tmp_path: Path) -> None:
    """The rule is not vacuous: a module that reaches back up is found."""
    module = tmp_path / "breach.py"
    module.write_text("def f() -> None:\n    from kv_storage.handlers import storage\n")
    assert "kv_storage.handlers.storage" in _imports(module)


@pytest.mark.parametrize(
    ("module", "not_loaded"),
    [
        ("pipeline.actor", ("kv_storage",)),
        # Its settings are declared with schemas.settings, which knows nothing of the service.
        ("pipeline.config", ("kv_storage",)),
        ("schemas.history", ("kv_storage",)),
        ("schemas.storage", ("kv_storage",)),
        ("kv_storage.config", ("aiohttp_apispec", "elasticsearch", "kv_storage.app")),
        ("kv_storage", ("aiohttp", "elasticsearch", "kv_storage.app")),
        # Every command starts here: the web stack and the client load only when a command
        # needs them (serve, init, storage).
        ("kv_storage.cli", ("aiohttp_apispec", "elasticsearch", "kv_storage.app")),
    ],
)
def test_each_package_imports_alone_in_a_fresh_interpreter(
    module: str, not_loaded: tuple[str, ...]
) -> None:
    probe = (
        f"import sys, {module}\n"
        f"loaded = [m for m in sys.modules if m.split('.')[0] in {not_loaded!r} "
        f"or any(m == n or m.startswith(n + '.') for n in {not_loaded!r})]\n"
        "print(','.join(sorted(loaded)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"import {module} loaded {result.stdout.strip()}"
