"""Atomic file writes, and the clean-up of temporaries that killed writers leave behind.

A file is written to ``<name>.tmp-<pid>`` in its own folder and renamed onto ``<name>`` once its
bytes are complete, so a reader never sees a torn file. A writer killed before the rename leaves
its temporary; :func:`remove_stale` deletes those whose process no longer runs. The pid test is
local to this machine: on a folder shared between hosts a temporary of a live writer elsewhere
may look dead, so run one writer per cache folder there.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Callable, BinaryIO

__all__ = ["TMP_MARK", "atomic_write", "remove_stale"]

TMP_MARK = ".tmp-"
_log = logging.getLogger(__name__)


def atomic_write(path: Path, write: Callable[[BinaryIO], None], clean: bool = True) -> None:
    """Call ``write(f)`` on a temporary beside ``path``, then rename it onto ``path``.

    The temporary is removed when ``write`` or the rename fails. With ``clean``, stale
    temporaries of ``path`` left by dead writers are removed first (caches clean whole folders
    once instead). Nothing is written through a symbolic link: the temporary is created afresh
    (``O_EXCL | O_NOFOLLOW``), and ``os.replace`` replaces a link at ``path``, never its target.
    """
    path = Path(path)
    if clean:
        remove_stale(path.parent, glob.escape(path.name))
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    tmp.unlink(missing_ok=True)  # an earlier process with this pid, or a planted link
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale(folder: Path, name: str = "*", recursive: bool = False) -> int:
    """Delete the temporaries of ``name`` (a glob) in ``folder`` whose writer no longer runs.

    Returns how many were deleted. A temporary that cannot be deleted (a read-only mount) is left
    where it is: readers never look at temporaries, so a complete cache stays readable.
    """
    removed = 0
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    pattern = f"{name}{TMP_MARK}*"
    for tmp in folder.rglob(pattern) if recursive else folder.glob(pattern):
        pid = tmp.name.rsplit(TMP_MARK, 1)[1]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            tmp.unlink(missing_ok=True)
        except OSError as error:  # read-only mount, or a folder we may not write
            _log.debug("left the stale temporary %s in place: %s", tmp, error)
            continue
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:  # not a pid at all
        return False
    return True
