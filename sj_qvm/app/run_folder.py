"""A run's output folder: which files each job writes, the fresh/--resume/--overwrite policy, and
the per-epoch log ``log.jsonl``.

Policy (one home for it), the same for every job (the DVS pipelines, the static-image pipeline,
``sj-qvm demo --digits``):

* what a job writes is its list in :data:`RUN_FILES`; nothing else in the folder is a run's;
* ``--out`` must be a folder or a path that can become one: a file there (or a file in its way)
  is refused at the start, before any work, in one line (:func:`check_folder`);
* a fresh run (neither ``--resume`` nor ``--overwrite``) into a folder that holds any job's run
  files is refused with :class:`FileExistsError`, so nothing of the old run is lost or mixed in;
* ``--overwrite`` deletes the run files of every job that are there (so no other job's results
  stay behind to mix with the new ones), never a file of any other name, then starts afresh;
* ``--resume`` continues from the checkpoint and truncates ``log.jsonl`` to the checkpoint's
  epochs, so an epoch logged just before a kill (log row written, checkpoint not yet renamed) is
  not logged twice. Without a checkpoint it says so and starts from epoch 1 with a new log. A
  folder holding another job's files is refused;
* no file is read, written or appended through a symbolic link, a dangling one included: a link
  under a run file's name is refused (``--overwrite`` deletes the link itself, never its target),
  appends open with ``O_NOFOLLOW`` and writes replace (:mod:`sj_qvm.atomic`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..atomic import append_bytes, refuse_link, remove_stale_temporaries, write_atomic
from .checkpoint import digest_path

__all__ = ["CHECKPOINT", "LOG", "TRAINING_FILES", "RUN_FILES", "run_files", "check_folder",
           "check_fresh", "prepare", "written_files", "append_log", "truncate_log"]

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
#: What every training job keeps: the checkpoint, its SHA-256 and the per-epoch log.
TRAINING_FILES = (CHECKPOINT, digest_path(Path(CHECKPOINT)).name, LOG)
#: Every file each job writes into its folder, one list per job; a job that writes a new file
#: adds its name here (``--overwrite`` deletes exactly the names listed, of every job).
RUN_FILES = {
    "dvs": TRAINING_FILES + ("results.json", "conversion_report.md", "conversion_report.png",
                             "accuracy_vs_T.png", "confusion.png"),
    "static": TRAINING_FILES + ("results.json", "tables.md", "conversion_report.md",
                                "conversion_report.png", "accuracy_vs_T.png", "v0_ablation.png"),
    "digits": ("results.json",),
}
_ALL_RUN_FILES = tuple(dict.fromkeys(n for names in RUN_FILES.values() for n in names))


def run_files(out: Path, names=_ALL_RUN_FILES) -> list:
    """The files of ``names`` (by default every job's run files) present in ``out``, links
    included (a dangling link too: tested with ``lstat``)."""
    return [Path(out) / n for n in names if os.path.lexists(Path(out) / n)]


def check_folder(path: Path, flag: str) -> Path:
    """``path`` if it is a folder or can become one; :class:`NotADirectoryError` naming ``flag``
    when it, or the first of its parents that exists, is not a folder (a file, a broken link)."""
    path = Path(path)
    for p in (path, *path.parents):
        if os.path.lexists(p):
            if not p.is_dir():
                where = "is" if p == path else f"is inside {p}, which is"
                raise NotADirectoryError(f"{flag} {path} {where} a file, not a folder; give a "
                                         "folder (it is created when missing)")
            break
    return path


def _job(job: str) -> tuple:
    if job not in RUN_FILES:
        raise ValueError(f"job must be one of {tuple(RUN_FILES)}, got {job!r}")
    return RUN_FILES[job]


def check_fresh(out: Path, job: str, resume: bool, overwrite: bool) -> None:
    """Apply the policy's refusals to ``out`` for ``job`` (read-only; every rank may call it)."""
    own = _job(job)
    check_folder(out, "--out")
    if overwrite:
        return
    present = run_files(out)
    if resume:
        foreign = [p.name for p in present if p.name not in own]
        if foreign:
            raise FileExistsError(
                f"{out} holds files of another job's run ({', '.join(foreign)}), so --resume "
                "would mix two runs; pass --overwrite to delete that run, or another --out")
        for p in present:
            refuse_link(p)
        return
    if present:
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(p.name for p in present)}); pass --resume to "
            "continue it, --overwrite to delete it and start afresh, or another --out")


def prepare(out: Path, job: str, resume: bool, overwrite: bool) -> None:
    """Apply the policy above before any work (rank 0 only; after :func:`check_fresh`)."""
    _job(job)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for p in run_files(out):
            p.unlink()  # a link is removed itself, its target stays
    for name in _ALL_RUN_FILES:
        remove_stale_temporaries(out / name)


def written_files(out: Path, job: str) -> list:
    """The paths a job lists as written (results and reports first, then checkpoint and log; the
    checkpoint's SHA-256 goes unlisted), whether or not they exist yet."""
    own = _job(job)
    return [Path(out) / n for n in own if n not in TRAINING_FILES] + \
        [Path(out) / n for n in (CHECKPOINT, LOG) if n in own]


def append_log(path: Path, row: dict) -> None:
    """Append one JSON line to the log and flush it to disk (a link at ``path`` is refused)."""
    append_bytes(path, (json.dumps(row) + "\n").encode("utf-8"))


def truncate_log(path: Path, epochs: int) -> int:
    """Keep the rows of epochs ``1..epochs`` of ``log.jsonl`` (in order), drop everything after.

    A torn last line (a kill during the append) or a row of a later epoch is dropped. Returns the
    number of rows kept; the file is rewritten atomically, and only when something is dropped.
    """
    path = refuse_link(path)
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
