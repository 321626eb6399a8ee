"""Atomic file writes: a temporary file beside the target, flushed to disk, then renamed into place.

A reader sees either the old file or the new one, never a part of one. The temporary file of a
writer is ``.<name>.tmp-<pid>`` in the target's folder; a writer that is killed leaves it behind,
and :func:`remove_stale_temporaries` deletes those whose process is gone.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["temp_path", "write_atomic", "remove_stale_temporaries"]


def temp_path(path: Path) -> Path:
    """This process's temporary file for ``path``: ``.<name>.tmp-<pid>`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; on any failure ``path`` is left as it was.

    The data is fsync'ed before the rename and the folder after it, so a power loss cannot leave
    an empty file under the final name either.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a KeyboardInterrupt too: leave no temporary file behind
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows, where folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers: this process writes one file at a time, and not now
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or no such pid at all)
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell: keep the file
    return True


def remove_stale_temporaries(path: Path) -> list:
    """Delete ``.<name>.tmp-<pid>`` files of ``path`` whose writer process no longer exists.

    Only the temporaries of this one target are touched, never other files of its folder.
    Returns the paths removed. A pid that was reused by a live process keeps its file.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp-(\d+)")
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m and not _alive(int(m.group(1))):
            try:
                entry.unlink()
                removed.append(entry)
            except OSError:  # gone already, a folder, or a read-only mount: leave it
                pass
    return removed
