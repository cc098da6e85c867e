"""README.md as data for tests/test_readme.py and tests/test_readme_claims.py.

The fenced blocks (with their ``<!-- continue -->`` / ``<!-- not run: REASON -->``
markers), sections, tables and the ``fnattr`` command lines of the README, and
the CLI run in-process.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*(continue|not run:\s*(?P<reason>\S.*?))\s*-->")
SHELL = ("bash", "sh", "shell", "console")


@dataclass
class Block:
    line: int
    lang: str
    code: str
    mark: str  # "run", "continue" or "not run"
    reason: str = ""

    @property
    def where(self) -> str:
        return f"README.md:{self.line}"


def _blocks(text: str) -> list[Block]:
    blocks, end = [], 0
    for match in FENCE.finditer(text):
        before = text[end:match.start()].rstrip().splitlines()
        last = before[-1].strip() if before else ""
        line = text.count("\n", 0, match.start()) + 1
        mark, reason = "run", ""
        if last.startswith("<!--"):
            found = MARKER.fullmatch(last)
            assert found, f"README.md:{line}: unknown marker {last!r}"
            mark = "continue" if found.group(1) == "continue" else "not run"
            reason = found.group("reason") or ""
        blocks.append(Block(line, match.group(1), match.group(2), mark, reason))
        end = match.end()
    return blocks


BLOCKS = _blocks(README)


def _chains() -> list[list[Block]]:
    """Runnable python blocks, each with the blocks that continue it."""
    chains: list[list[Block]] = []
    for block in BLOCKS:
        if block.lang != "python" or block.mark == "not run":
            continue
        if block.mark == "continue":
            assert chains, f"{block.where}: nothing to continue"
            chains[-1].append(block)
        else:
            chains.append([block])
    return chains



def _cli(argv: list[str]) -> tuple[int, str]:
    from fnattr.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
    return code, out.getvalue()


def _commands(code: str) -> list[str]:
    joined = code.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def _fnattr_argv(command: str) -> list[str] | None:
    """The argv of an ``fnattr`` command (``fnattr``, ``python -m fnattr``, ``torchrun -m``)."""
    words = shlex.split(command)
    if words[:1] in (["fnattr"], [".venv/bin/fnattr"]):
        return words[1:]
    for i in range(len(words) - 1):
        if words[i:i + 2] == ["-m", "fnattr"]:
            return words[i + 2:]
    return None


def _section(title: str, text: str = README) -> str:
    """The text of the section headed ``title`` (up to the next heading of its level or above)."""
    blank = FENCE.sub(lambda m: " " * len(m.group(0)), text)  # no headings inside code
    start = re.search(rf"^(#+) {re.escape(title)}.*$", blank, re.M)
    assert start, f"no section {title!r}"
    level = len(start.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(blank, start.end())
    return text[start.end():end.start() if end else len(text)]


def _prose(text: str) -> str:
    return FENCE.sub("", text)


def _table(text: str) -> list[list[str]]:
    """Rows (cells stripped) of the markdown tables in ``text``, less the first header and rule."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return [r for r in rows[2:]]


@pytest.fixture
def one_thread():
    """One torch thread: on a loaded 2-core CI machine oversubscribed threads cost up to 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
