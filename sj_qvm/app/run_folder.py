"""A training run's output folder: which files are a run's, the fresh/--resume/--overwrite policy,
and the per-epoch log ``log.jsonl``.

Policy (one home for it):

* a fresh run (neither ``--resume`` nor ``--overwrite``) into a folder that already holds a run's
  files is refused with :class:`FileExistsError`, so nothing of the old run is lost or mixed in;
* ``--overwrite`` deletes the old run's files first, then starts afresh;
* ``--resume`` continues from the checkpoint and truncates ``log.jsonl`` to the checkpoint's
  epochs, so an epoch logged just before a kill (log row written, checkpoint not yet renamed) is
  not logged twice. Without a checkpoint it says so and starts from epoch 1 with a new log.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..atomic import remove_stale_temporaries, write_atomic
from .checkpoint import digest_path

__all__ = ["CHECKPOINT", "LOG", "RUN_FILES", "run_files", "check_fresh", "prepare", "append_log",
           "truncate_log"]

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
#: Every file a run writes into its folder (``--overwrite`` deletes exactly these).
RUN_FILES = (CHECKPOINT, digest_path(Path(CHECKPOINT)).name, LOG, "results.json",
             "conversion_report.md", "conversion_report.png", "accuracy_vs_T.png", "confusion.png")


def run_files(out: Path) -> list:
    """The run files present in ``out``."""
    return [Path(out) / n for n in RUN_FILES if (Path(out) / n).exists()]


def check_fresh(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a fresh run into a folder holding another run (read-only; every rank may call it)."""
    if resume or overwrite:
        return
    present = run_files(out)
    if present:
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(p.name for p in present)}); pass --resume to "
            "continue it, --overwrite to delete it and start afresh, or another --out")


def prepare(out: Path, resume: bool, overwrite: bool) -> None:
    """Apply the policy above before training (rank 0 only; after :func:`check_fresh`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for p in run_files(out):
            p.unlink()
    for name in RUN_FILES:
        remove_stale_temporaries(out / name)


def append_log(path: Path, row: dict) -> None:
    """Append one JSON line to the log and flush it to disk."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_log(path: Path, epochs: int) -> int:
    """Keep the rows of epochs ``1..epochs`` of ``log.jsonl`` (in order), drop everything after.

    A torn last line (a kill during the append) or a row of a later epoch is dropped. Returns the
    number of rows kept; the file is rewritten atomically, and only when something is dropped.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    except FileNotFoundError:
        return 0
    kept = []
    for line in lines:
        if len(kept) == epochs:
            break
        try:
            row = json.loads(line)
        except ValueError:
            break
        if not isinstance(row, dict) or row.get("epoch") != len(kept) + 1 or not line.endswith("\n"):
            break
        kept.append(line)
    if len(kept) != len(lines):
        write_atomic(path, "".join(kept).encode("utf-8"))
    return len(kept)
