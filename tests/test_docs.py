"""The documents stay true to the code: README.md and docs/*.md.

- Every ``kv-storage ...`` command line they quote (in shell code blocks, and in inline code)
  is run through the real command line with ``--help`` appended, and parsed as given without
  running it: an unknown command, action or option, or a bad value of a choice, fails.
- The property table of docs/configuration.md is the one ``kv_storage.config.reference``
  makes from the code, and lists every property.
- Relative links lead to files (and headings) that exist; the README stays short.
"""

import argparse
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from kv_storage import cli
from kv_storage.config import PROPERTIES, reference

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"", "sh", "bash", "shell", "console"}
README_MAX_BYTES = 10 * 1024


@dataclass(frozen=True)
class Quoted:
    where: str
    text: str
    args: tuple[str, ...]
    inline: bool  # a name in prose (`kv-storage init`), which may leave required arguments out


def _fences(path: Path) -> list[tuple[int, str, list[str]]]:
    """(first line number, info string, lines) of each fenced code block."""
    blocks: list[tuple[int, str, list[str]]] = []
    fence: str | None = None
    info = ""
    start = 0
    body: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if fence is None:
            match = re.match(r"(`{3,}|~{3,})\s*([\w+-]*)", stripped)
            if match:
                fence, info, start, body = match.group(1), match.group(2).lower(), number + 1, []
        elif stripped.startswith(fence) and not stripped[len(fence) :].strip():
            blocks.append((start, info, body))
            fence = None
        else:
            body.append(line)
    return blocks


def _commands(words: list[str]) -> list[list[str]]:
    """The simple commands of a shell line: split at operators, redirections left out."""
    commands: list[list[str]] = [[]]
    skip_next = False
    for word in words:
        if skip_next:
            skip_next = False
        elif word and set(word) <= set("|&;()"):
            commands.append([])
        elif word and set(word) <= set("<>&"):
            skip_next = True
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def _is_kv_storage(word: str) -> bool:
    return word.rsplit("/", 1)[-1] == "kv-storage"


def _kv_storage_args(command: list[str]) -> list[str] | None:
    """The arguments of ``kv-storage`` when the command runs it: directly (after variable
    assignments, ``sudo``, ``env``), or in a container (``docker run ... IMAGE kv-storage ...``,
    ``docker compose exec SERVICE kv-storage ...``)."""
    words = list(command)
    while words and (
        re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]) or words[0] in ("sudo", "env", "exec")
    ):
        words.pop(0)
    if not words:
        return None
    if _is_kv_storage(words[0]):
        return words[1:]
    if words[0] in ("docker", "podman", "docker-compose", "podman-compose") and (
        "run" in words or "exec" in words
    ):
        # The image (or service) is named kv-storage too: the command follows the last pair.
        pairs = [
            i
            for i in range(len(words) - 1)
            if _is_kv_storage(words[i]) and _is_kv_storage(words[i + 1])
        ]
        if pairs:
            return words[pairs[-1] + 2 :]
    return None


def _shell_lines(lines: list[str]) -> list[tuple[int, str]]:
    """Logical lines: continuations joined, quotes that span lines kept together."""
    logical: list[tuple[int, str]] = []
    pending = ""
    first = 0
    for offset, line in enumerate(lines):
        if not pending:
            first = offset
            line = re.sub(r"^\s*\$ ", "", line)  # a console prompt
        pending += line + "\n"
        if line.rstrip().endswith("\\"):
            pending = pending.rstrip()[:-1] + " "
            continue
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # a quote that closes on a later line
            continue
        logical.append((first, pending))
        pending = ""
    if pending:
        logical.append((first, pending))
    return logical


def quoted_commands() -> list[Quoted]:
    found: list[Quoted] = []
    for path in DOCUMENTS:
        name = path.relative_to(ROOT).as_posix()
        for start, info, lines in _fences(path):
            if info not in SHELL_BLOCKS:
                continue
            for offset, text in _shell_lines(lines):
                lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
                lexer.whitespace_split = True
                lexer.commenters = "#"
                for command in _commands(list(lexer)):
                    args = _kv_storage_args(command)
                    if args is not None:
                        where = f"{name}:{start + offset}"
                        found.append(Quoted(where, text.strip(), tuple(args), inline=False))
        # Inline code in the prose, outside code blocks: `kv-storage init --migrate`.
        prose = re.sub(r"(?ms)^\s*(```|~~~).*?^\s*\1", "", path.read_text())
        for match in re.finditer(r"`(kv-storage [^`]+)`", prose):
            words = shlex.split(match.group(1))
            if words[1].endswith(":"):  # a message the command prints, not a command line
                continue
            found.append(Quoted(f"{name} (inline)", match.group(1), tuple(words[1:]), True))
    return found


QUOTED = quoted_commands()


def test_the_documents_quote_every_command() -> None:
    """The search above finds what it is meant to: each command is quoted somewhere."""
    quoted = {q.args[0] for q in QUOTED if q.args}
    commands = next(
        set(action.choices)
        for action in cli.build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    assert commands <= quoted, f"never quoted: {sorted(commands - quoted)}"
    assert len([q for q in QUOTED if not q.inline]) >= 15


def _parse(args: list[str]) -> tuple[int | None, str, list[str]]:
    """Exit status (None: parsed), what argparse printed, and the arguments it did not know."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            _, unknown = cli.build_parser().parse_known_args(args)
    except SystemExit as stop:
        return (stop.code if isinstance(stop.code, int) else 1), out.getvalue(), []
    return None, out.getvalue(), unknown


@pytest.mark.parametrize(
    "quoted", QUOTED, ids=[f"{q.where} {' '.join(q.text.split())[:60]}" for q in QUOTED]
)
def test_a_quoted_command_line_is_one_the_cli_takes(quoted: Quoted) -> None:
    args = list(quoted.args)
    help_out = io.StringIO()
    with (
        pytest.raises(SystemExit) as stop,
        contextlib.redirect_stdout(help_out),
        contextlib.redirect_stderr(help_out),
    ):
        cli.main([*args, "--help"])
    assert stop.value.code == 0, f"{quoted.where}: `{quoted.text}`\n{help_out.getvalue()}"
    assert "usage: kv-storage" in help_out.getvalue()

    status, printed, unknown = _parse(args)
    if status is not None and quoted.inline:
        # A command named in prose may leave out what the reader fills in.
        assert "the following arguments are required" in printed, printed
        return
    assert status is None, f"{quoted.where}: `{quoted.text}`\n{printed}"
    assert unknown == [], f"{quoted.where}: `{quoted.text}`: unknown {unknown}"


def test_the_check_sees_an_unknown_option_and_action() -> None:
    for args in (["storage", "create", "--type", "TEMP", "--tll", "5"], ["storage", "lsit"]):
        status, _, unknown = _parse(args)
        assert status is not None or unknown, args
    assert _kv_storage_args(shlex.split("docker compose exec kv-storage kv-storage init")) == [
        "init"
    ]
    assert _kv_storage_args(shlex.split("docker build -t kv-storage .")) is None


# The configuration reference ------------------------------------------------------------------

CONFIGURATION = ROOT / "docs" / "configuration.md"


def test_the_configuration_table_is_current() -> None:
    text = CONFIGURATION.read_text()
    assert reference.render(text) == text, (
        "docs/configuration.md's table is stale: run python -m kv_storage.config.reference"
    )


def test_the_configuration_table_lists_every_property() -> None:
    text = CONFIGURATION.read_text()
    for prop in PROPERTIES:
        assert f"| `{prop.name}` | `{prop.env_var}` |" in text, prop.name


def test_a_stale_table_is_found(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(f"# C\n\n{reference.BEGIN}\n| old |\n{reference.END}\n")
    assert reference.main([str(stale), "--check"]) == 1
    assert reference.main([str(stale)]) == 0
    assert reference.main([str(stale), "--check"]) == 0
    assert "| `elasticsearch.uri` |" in stale.read_text()


# Links and size -------------------------------------------------------------------------------


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of a Markdown file."""
    anchors: set[str] = set()
    prose = re.sub(r"(?ms)^\s*(```|~~~).*?^\s*\1", "", path.read_text())
    for heading in re.findall(r"(?m)^#{1,6}\s+(.+?)\s*$", prose):
        slug = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).replace(" ", "-")
        anchors.add(slug)
    return anchors


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_relative_links_lead_somewhere(path: Path) -> None:
    prose = re.sub(r"(?ms)^\s*(```|~~~).*?^\s*\1", "", path.read_text())
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{path.name}: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{path.name}: {target}: no such heading"


def test_the_readme_is_short() -> None:
    assert len(README.read_bytes()) <= README_MAX_BYTES
