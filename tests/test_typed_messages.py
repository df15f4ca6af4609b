"""Each message says the type of its answer, so strict type checking catches a caller that
misreads one: the check runs mypy, as CI does, on a handler that asks wrongly."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]

_HANDLER = """
from kv_storage.actors.storage import GetValue, SetValues, StorageActor
from kv_storage.model import Storage


async def handler(actor: StorageActor, storage: Storage) -> None:
    value: str | None = (await actor.ask(GetValue(storage, "k"))).value
    written: set[str] = await actor.ask(SetValues(storage, {{"k": "v"}}, 0))
    {wrong}
"""


def _mypy(tmp_path: Path, wrong: str) -> subprocess.CompletedProcess[str]:
    module = tmp_path / "handler_under_test.py"
    module.write_text(_HANDLER.format(wrong=wrong))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(module)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_asking_for_the_right_answer_type_passes(tmp_path: Path) -> None:
    result = _mypy(tmp_path, "assert value and written is not None")
    assert result.returncode == 0, result.stdout + result.stderr


def test_asking_for_the_wrong_answer_type_fails_type_checking(tmp_path: Path) -> None:
    result = _mypy(tmp_path, 'count: int = await actor.ask(GetValue(storage, "k"))')
    assert result.returncode == 1, result.stdout + result.stderr
    # mypy words it by the expected type: GetValue is no Ask[int].
    assert 'handler_under_test.py:9: error: Argument 1 to "ask"' in result.stdout
    assert '"GetValue"; expected "Ask[int]"' in result.stdout
