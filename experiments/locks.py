"""One writer per directory: an exclusive ``fcntl.flock`` on ``DIR/.lock``, which names its holder.

A run directory (and a comparison directory) is locked while a process writes it; a second writer is refused with
one line naming the holder's pid and host. The lock is the kernel's: it goes away with the process, however that
ends (even SIGKILL), so a killed run leaves no stale lock behind. The ``.lock`` file itself stays (deleting it would
let two processes lock two different files).
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

LOCK_FILE = ".lock"


class DirectoryLockedError(ValueError):
    """Another process holds the directory's lock (the message names it)."""


class DirectoryLock:
    """The exclusive lock of ``directory`` (created with its parents), taken at construction.

    Raises:
        DirectoryLockedError: another process holds it.
        ValueError: ``directory`` cannot be created or written (a file in the way, a read-only location, no
            permission), in one line naming it.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ValueError(f"cannot write to {self.directory}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(self._fd, 256).decode("utf-8", "replace").strip() or "another process"
            os.close(self._fd)
            self._fd = None
            raise DirectoryLockedError(
                f"{self.directory} is being written by {holder} (lock {self.path}); wait for it to finish or stop it"
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up (safe to call more than once)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
