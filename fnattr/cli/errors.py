"""The CLI's one error type and how other errors become one line.

Every problem with a request is a :class:`CLIError`: ``main`` prints it as
``fnattr: error: <line>`` and exits with code 2. Errors raised by fnattr's
functions name the Python argument they are about: :func:`argument_of` reads
it from the error's ``argument`` attribute when it has one, otherwise from the
first backticked name in its message, and ``args.flag_of_param`` maps it to
the flag the user typed.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any, Callable, Iterator

EXIT_ERROR = 2


class CLIError(Exception):
    """A problem with the user's request: reported as one line, exit code 2."""


def debug() -> bool:
    """Whether ``FNATTR_DEBUG`` asks for tracebacks instead of one-line errors."""
    return os.environ.get("FNATTR_DEBUG", "") not in ("", "0")


def one_line(message: Any, limit: int = 400) -> str:
    """The first non-empty line of ``message``, without terminal escapes, shortened."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(message))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else "unknown error"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe(error: BaseException) -> str:
    """One line for an exception, with its type where the message alone says too little."""
    message = one_line(error)
    if message == "unknown error" or isinstance(error, (KeyError, AssertionError, SystemExit)):
        message = f"{type(error).__name__}: {message}"
    return message


def argument_of(error: BaseException) -> str | None:
    """The Python argument an error is about: its ``argument`` attribute, or the
    first backticked name in its message (``\\`baselines[1]\\``` gives ``baselines``)."""
    argument = getattr(error, "argument", None)
    if isinstance(argument, str):
        return argument
    found = re.search(r"`([A-Za-z_]\w*)(?:\[\d+\])?`", str(error))
    return found.group(1) if found else None


@contextlib.contextmanager
def user_code(what: str | Callable[[BaseException], str]) -> Iterator[None]:
    """Runs the user's code (imports, factories, forwards): any exception, or a
    ``SystemExit`` it raises, becomes a :class:`CLIError` whose message is
    ``what(error)``, or ``"<what>: <one line>"`` for a string ``what``."""
    try:
        yield
    except CLIError:
        raise
    except (Exception, SystemExit) as error:
        if debug():
            raise
        message = what(error) if callable(what) else f"{what}: {describe(error)}"
        raise CLIError(message) from None
