"""One run per results directory: ``DIR/.moesim-lock``, held with ``flock`` while a run writes.

The lock is the kernel's, so it ends with its holder however that ends (a crash, SIGKILL): a
later run takes it at once. The file says who holds it (pid, host, start time, command), so a
refused run can name the holder, and a run that takes over from one that died without letting go
says so in one line. The file itself is never deleted (deleting it would let two runs each lock a
different file); it is emptied when its holder lets go.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from experiments.arguments import UsageError

LOCK = ".moesim-lock"


def _describe(holder: dict[str, Any]) -> str:
    started = holder.get("started")
    since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if started else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}{since}"


class RunLock:
    """Hold ``DIR/.moesim-lock`` (``with RunLock(out) as lock: ...``); ``lock.note`` is the line
    to show when the previous holder died holding it (else None)."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK
        self.note: str | None = None
        self._fd: int | None = None
        self._announced = False

    def check(self) -> None:
        """Raise :class:`UsageError` naming the holder when a run holds the lock now; create and
        change nothing (for a refusal that comes before anything is written)."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError:
            return
        try:
            self._try(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _try(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._read(fd)
            who = f"another moesim run ({_describe(holder)})" if holder else "another moesim run"
            raise UsageError(
                f"--out {self.path.parent}: {who} is writing it (wait for it to finish, or use another --out)"
            ) from None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`UsageError` naming the run that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            self._try(fd)
        except UsageError:
            os.close(fd)
            raise
        previous = self._read(fd)
        if previous:
            self.note = (
                f"{self.path.parent}: the run of {_describe(previous)} ended without finishing; "
                "taking over its results directory"
            )
        self._fd = fd
        return self

    def announce(self) -> None:
        """Write who holds the lock into it (once the run is sure to go ahead: a refused run
        leaves the file as it found it)."""
        assert self._fd is not None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "argv": sys.argv[1:]}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(me) + "\n").encode(), 0)
        self._announced = True

    @staticmethod
    def _read(fd: int) -> dict[str, Any] | None:
        try:
            text = os.pread(fd, 65536, 0).decode()
            holder = json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def release(self) -> None:
        """Let go: empty the file (a clean end), then unlock."""
        if self._fd is None:
            return
        if self._announced:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None
        self._announced = False

    def __enter__(self) -> RunLock:
        self.acquire().announce()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
