"""Cache entries: one ``.npz`` per sample, written to a temporary name and renamed into place.

An entry's final path exists only once its bytes are complete, so a killed run leaves at most a
``.tmp`` file that no reader looks at; :func:`remove_stale` deletes those of dead processes and
the next run rebuilds the missing entries.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["save_entry", "load_entry", "remove_stale", "compact_counts", "CACHE_VERSION"]

CACHE_VERSION = "v1"  # bump when an entry's layout changes: old folders are then ignored
_TMP_MARK = ".tmp-"


def _write(f, arrays: dict, compress: bool) -> None:
    (np.savez_compressed if compress else np.savez)(f, **arrays)


def save_entry(path: Path, compress: bool = False, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    tmp = path.with_name(f"{path.name}{_TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            _write(f, arrays, compress)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_entry(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def remove_stale(folder: Path) -> int:
    """Delete temporary files left in ``folder`` by processes that no longer run."""
    removed = 0
    if not folder.is_dir():
        return removed
    for tmp in folder.rglob(f"*{_TMP_MARK}*"):
        pid = tmp.name.rsplit(_TMP_MARK, 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def compact_counts(frames: np.ndarray) -> np.ndarray:
    """The narrowest unsigned dtype (uint8, uint16, uint32) that holds ``frames`` exactly."""
    top = int(frames.max(initial=0))
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return frames.astype(dtype, copy=False)
    raise ValueError(f"a frame count of {top} does not fit in uint32")
