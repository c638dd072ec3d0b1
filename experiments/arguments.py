"""Argument parsing shared by the ``moesim`` commands: one-line usage errors and number types.

Every bad command line ends the same way as bad input anywhere in moesim: one line on stderr
naming the argument, exit status 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


class UsageError(ValueError):
    """A bad command line (the message is one line)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


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
