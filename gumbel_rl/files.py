"""Files that survive interruption and never run code: atomic writes, and weights-only loading of tagged payloads.

:func:`atomic_path` is the one way this project writes a result file: into a temporary file next to the target,
flushed to disk, given the ordinary permissions of a new file, then renamed over the target -- so an interrupted
write never leaves a truncated file behind. :func:`safe_torch_load` reads ``torch.save`` payloads with
``weights_only=True`` and checks their format tag.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


def _new_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, publish it as ``path`` atomically.

    On success the temporary file is fsynced, given the permissions a new file would get (0666 less the umask;
    ``mkstemp`` creates it private) and renamed over ``path``. On any error (or KeyboardInterrupt) it is removed and
    ``path`` is left as it was. ``suffix`` lets writers that infer the format from the name (Pillow, imageio) see it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
    return Path(path)


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save(payload)`` to ``path`` atomically: an interrupted save never leaves a truncated file."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def safe_torch_load(path: str | os.PathLike, expected_format: str) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a dict tagged ``format == expected_format``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: truncated, corrupt or foreign file (one line naming the file and the problem).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: cannot be read as a gumbel-rl file (truncated or corrupt?): {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: not a {expected_format} file (found format {found!r})")
    return payload
