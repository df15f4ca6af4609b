"""Podman for the container tests: the images ``scripts/containers.sh`` builds, and running them.

The images are built once per test run (the stand-in base images only when missing), by the
first test that needs them; that test's timeout allows for it.
"""

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).parents[1]
CONTAINERS_SH = ROOT / "scripts" / "containers.sh"
BUILD_TIMEOUT_S = 1200
"""A fresh machine builds two Debian root file systems and installs the project's wheels."""


def podman(
    *args: str, timeout_s: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=check,
        stdin=subprocess.DEVNULL,
    )


def image_names() -> dict[str, str]:
    output = subprocess.run(
        [str(CONTAINERS_SH), "names"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return dict(line.split("=", 1) for line in output.splitlines())


_built: dict[str, str] = {}


def build(what: str) -> str:
    """``image`` or ``es-image``, built at most once per run; its name."""
    if what not in _built:
        if shutil.which("podman") is None and os.geteuid() != 0:
            raise RuntimeError("podman is missing: run scripts/containers.sh setup as root")
        result = subprocess.run(
            [str(CONTAINERS_SH), what],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"scripts/containers.sh {what} failed:\n{result.stderr}")
        _built[what] = image_names()["IMAGE" if what == "image" else "ES_IMAGE"]
    return _built[what]


@contextmanager
def container(image: str, *args: str, command: tuple[str, ...] = ()) -> Iterator[str]:
    """A detached container of ``image`` (``podman run -d ARGS IMAGE COMMAND``); removed after."""
    name = f"kv-test-{uuid.uuid4().hex[:10]}"
    podman("run", "-d", "--name", name, *args, image, *command)
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)
