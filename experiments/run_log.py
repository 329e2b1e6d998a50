"""A run's record on disk, written as training runs through Stable-Baselines3's logger.

:func:`configure_run_logger` builds the SB3 ``Logger`` a run gives its agent (``agent.set_logger``): every record row
(``Agent._after_iteration`` records it and dumps it at the env step) goes to

- ``metrics.csv`` through :class:`AppendingCSVOutputFormat`, one line per row, flushed at once, so a run that
  dies keeps its record up to its last iteration;
- ``tb/`` through SB3's ``TensorBoardOutputFormat``, when ``tensorboard`` is installed (an optional extra);
- stdout through SB3's ``HumanOutputFormat``, only when asked (``train.py --verbose``).

SB3's own ``CSVOutputFormat`` opens its file with ``"w"`` and cannot continue one, which ``--resume`` needs; ours
appends, and when a row brings a new key it rewrites the file atomically with the wider header. On resume the file
is first rewritten from the checkpoint's record (:func:`write_metrics_csv`), so it matches the resumed state.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stable_baselines3.common import logger as sb3_logger
from stable_baselines3.common.logger import HumanOutputFormat, KVWriter, Logger, filter_excluded_keys

from gumbel_rl.files import atomic_path, atomic_write_text


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as CSV text; columns: ``columns`` or the union of the rows' keys in first-seen order; missing cells
    (and None) empty."""
    if columns is None:
        columns = list(_union_keys(rows))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def _union_keys(rows: Sequence[Mapping[str, Any]]) -> dict[str, None]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return seen


def write_metrics_csv(path: str | os.PathLike, record: Sequence[Mapping[str, Any]]) -> Path:
    """``record`` (an agent's rows) as a metrics CSV, written atomically: what :class:`AppendingCSVOutputFormat`
    would have written for these rows (booleans as 0/1, as the agent logs them)."""
    rows = [{k: int(v) if isinstance(v, bool) else v for k, v in row.items()} for row in record]
    return atomic_write_text(path, csv_text(rows) if rows else "")


def _parse_cell(text: str) -> Any:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``metrics.csv`` with numbers parsed; empty cells dropped.

    Raises:
        FileNotFoundError: no such file.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{k: parsed for k, v in row.items() if (parsed := _parse_cell(v)) is not None} for row in rows]


class AppendingCSVOutputFormat(KVWriter):
    """SB3 ``KVWriter`` appending one CSV line per ``Logger.dump`` to ``path`` (created if missing), flushed.

    The header is the union of the keys seen, in first-seen order (those of an existing file first). A row with a
    key the header lacks makes it rewrite the file atomically with the wider header (earlier rows get empty cells).
    Keys excluded for ``"csv"`` (``logger.record(key, value, exclude="csv")``) are skipped.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.columns: list[str] = []
        if self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as f:
                self.columns = next(csv.reader(f), [])
        self.file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        row = filter_excluded_keys(key_values, key_excluded, "csv")
        if not row:
            return
        new = [k for k in row if k not in self.columns]
        if new:
            self._widen(new)
        cells = ["" if row.get(c) is None else row[c] for c in self.columns]
        csv.writer(self.file, lineterminator="\n").writerow(cells)
        self.file.flush()

    def _widen(self, new: list[str]) -> None:
        """Add ``new`` columns: a header line for an empty file, else an atomic rewrite of the whole file."""
        if not self.columns:
            self.columns = list(new)
            csv.writer(self.file, lineterminator="\n").writerow(self.columns)
            return
        self.file.close()
        with open(self.path, newline="", encoding="utf-8") as f:
            old = list(csv.reader(f))[1:]
        self.columns += new
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(self.columns)
            writer.writerows(line + [""] * (len(self.columns) - len(line)) for line in old)
        self.file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def close(self) -> None:
        self.file.close()


def tensorboard_available() -> bool:
    """True when ``tensorboard`` is installed (SB3's TensorBoard output then works)."""
    return sb3_logger.SummaryWriter is not None


def configure_run_logger(
    metrics_csv: str | os.PathLike, tb_dir: str | os.PathLike | None = None, verbose: bool = False
) -> Logger:
    """The SB3 ``Logger`` of a run: CSV rows appended to ``metrics_csv``, TensorBoard in ``tb_dir`` (when given and
    ``tensorboard`` is installed), and SB3's stdout table with ``verbose``. Close it with ``logger.close()``."""
    formats: list[KVWriter] = [AppendingCSVOutputFormat(metrics_csv)]
    if tb_dir is not None and tensorboard_available():
        formats.append(sb3_logger.TensorBoardOutputFormat(str(tb_dir)))
    if verbose:
        formats.append(HumanOutputFormat(sys.stdout))
    return Logger(folder=str(Path(metrics_csv).parent), output_formats=formats)
