"""Files that survive interruption and never run code: atomic writes, and weights-only loading of tagged payloads.

:func:`atomic_path` is the one way this project writes a result file: into a temporary file next to the target,
flushed to disk, given the ordinary permissions of a new file, then renamed over the target -- so an interrupted
write never leaves a truncated file behind. :func:`safe_torch_load` reads ``torch.save`` payloads with
``weights_only=True`` and checks their format tag.
"""

from __future__ import annotations

import contextlib
import os
import re
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
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
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


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
    return Path(path)


def atomic_torch_save(payload: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(payload)`` to ``path`` atomically: an interrupted save never leaves a truncated file."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _load_failure(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words, without torch's own advice.

    torch's message for a refused object starts by suggesting ``weights_only=False``, which would run whatever code
    the file holds: that advice must never reach a user, so only the refused object's name is kept.
    """
    text = str(exc)
    refused = re.search(r"unsupported GLOBAL ([\w.]+)", text)
    if refused or "weights_only" in text.lower() or "weights only" in text.lower():
        what = f" ({refused.group(1)})" if refused else ""
        return f"truncated or corrupt: it holds a Python object{what} that gumbel-rl never unpickles"
    return "truncated or corrupt"


def safe_torch_load(path: str | os.PathLike[str], expected_format: str) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a dict tagged ``format == expected_format``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: truncated, corrupt or foreign file, or one holding pickled objects other than tensors and plain
            data (which are never unpickled): one line naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise ValueError(f"{path}: not a readable gumbel-rl file ({_load_failure(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: not a {expected_format} file (found format {found!r})")
    return payload
