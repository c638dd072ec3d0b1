"""Argument parsing shared by the ``moesim`` commands: one-line usage errors and number types.

Every bad command line ends the same way as bad input anywhere in moesim: one line on stderr,
``moesim: error: <what> (<fix>)``, naming the argument, exit status 2 (:func:`fail`).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

ERROR_PREFIX = "moesim: error: "
"""How every error line of every ``moesim`` command starts (once: messages carry no prefix)."""


class UsageError(ValueError):
    """A bad command line (the message is one line)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def fail(err: BaseException | str, status: int = 2) -> int:
    """Print ``err`` as one line ``moesim: error: ...`` on stderr and return ``status``."""
    text = one_line(str(err))
    text = text[len(ERROR_PREFIX) :] if text.startswith(ERROR_PREFIX) else text  # never twice
    print(ERROR_PREFIX + text, file=sys.stderr)
    return status


def one_line(text: str) -> str:
    """``text`` with its whitespace (newlines included) collapsed to single spaces."""
    return " ".join(text.split())


def help_status(done: SystemExit) -> int:
    """The exit status of argparse's own exit (``--help``, ``--version``): its code, 0 for none."""
    code = done.code
    return code if isinstance(code, int) else 0 if code is None else 2


def whole(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number (ASCII digits) of at least ``minimum``."""

    def parse(text: str) -> int:
        if not (text.isascii() and text.isdigit()) or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= {minimum}")
        return int(text)

    return parse


positive = whole(1)
"""An argparse type: a whole number >= 1."""


def non_negative(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0")
    return value
