"""Atomic file writes: the one home of the temporary-file rule every writer of sj-qvm follows.

A file is written to its temporary ``.<name>.tmp-<pid>`` in its own folder, flushed to disk, and
renamed onto ``<name>`` once its bytes are complete, so a reader sees the old file or the new one,
never a part of one. A write that fails removes its temporary. A writer that is killed leaves it
behind; :func:`remove_stale_temporaries` (one target) and :func:`remove_stale` (a folder, for
caches) delete those whose process no longer runs. The pid test is local to this machine: on a
folder shared between hosts a temporary of a live writer elsewhere may look dead, so run one
writer per folder there. One process writes one file at a time under a given name.

Nothing is written through a symbolic link: :func:`atomic_write` replaces a link at its target
(never its destination), and :func:`append_bytes` refuses one (:class:`LinkError`), a dangling
link too; :func:`refuse_link` is the same test for a caller that checks a file before it writes.
"""
from __future__ import annotations

import errno
import logging
import os
import re
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["TMP_MARK", "LinkError", "temp_path", "atomic_write", "write_atomic", "append_bytes",
           "refuse_link", "remove_stale_temporaries", "remove_stale"]

TMP_MARK = ".tmp-"
"""What sits between a target's name and the writer's pid in its temporary's name."""
_TEMPORARY = re.compile(rf"\.(.+){re.escape(TMP_MARK)}(\d+)")  # .<name>.tmp-<pid>
_log = logging.getLogger(__name__)


class LinkError(OSError):
    """A file sj-qvm was to write or append to is a symbolic link (dangling or not)."""


def refuse_link(path: str | os.PathLike) -> Path:
    """``path``, or :class:`LinkError` naming it when it is a symbolic link. The test is ``lstat``
    (``is_symlink``), so a dangling link, for which ``exists()`` is false, is refused too."""
    path = Path(path)
    if path.is_symlink():
        raise LinkError(f"{path} is a symbolic link (to {os.readlink(path)}); sj-qvm never writes "
                        "through a link: remove it, or choose another folder")
    return path


def temp_path(path: str | os.PathLike) -> Path:
    """This process's temporary file for ``path``: ``.<name>.tmp-<pid>`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], clean: bool = True,
                 fsync: bool = True) -> None:
    """Call ``write(f)`` on the temporary of ``path``, then rename it onto ``path``.

    On any failure (a ``KeyboardInterrupt`` too) ``path`` is left as it was and the temporary is
    removed. With ``fsync`` the bytes are flushed to disk before the rename and the folder after
    it, so a power loss cannot leave an empty file under the final name either (caches, whose
    entries are validated on every read, skip that cost). With ``clean``, stale temporaries of
    ``path`` left by dead writers are removed first (caches clean whole folders once instead, with
    :func:`remove_stale`). Nothing is written through a symbolic link: the temporary is created
    afresh (``O_EXCL | O_NOFOLLOW``), and ``os.replace`` replaces a link at ``path``, never its
    target.
    """
    path = Path(path)
    if clean:
        remove_stale_temporaries(path)
    tmp = temp_path(path)
    tmp.unlink(missing_ok=True)  # an earlier process with this pid, or a planted link
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_folder(path.parent)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write the bytes ``data`` to ``path`` with :func:`atomic_write` (stale temporaries of
    ``path`` removed first)."""
    atomic_write(path, lambda f: f.write(data))


def append_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    """Append ``data`` to ``path`` (created when missing) and, with ``fsync``, flush it to disk.

    A symbolic link at ``path`` is refused with :class:`LinkError` (``O_NOFOLLOW``, and an
    ``lstat`` where the platform has no such flag), so nothing lands outside ``path``'s folder.
    """
    path = refuse_link(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EMLINK):  # a link planted since the check
            raise LinkError(f"{path} is a symbolic link; sj-qvm never writes through a link") \
                from None
        raise
    with os.fdopen(fd, "ab") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


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
    # Our own pid counts as alive: another thread may be writing. A leftover of an earlier
    # process that had our pid is removed when its target is written again (atomic_write).
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or no such pid at all)
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell: keep the file
    return True


def _remove_if_stale(entry: Path, target_name: str | None) -> bool:
    """Delete ``entry`` when it is a temporary (of ``target_name``, if given) of a dead writer;
    one that cannot be deleted (a folder, a read-only mount) is left where it is."""
    match = _TEMPORARY.fullmatch(entry.name)
    if match is None or (target_name is not None and match.group(1) != target_name):
        return False
    if _alive(int(match.group(2))):
        return False
    try:
        entry.unlink()
    except OSError as error:
        _log.debug("left the stale temporary %s in place: %s", entry, error)
        return False
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of ``path`` whose writer process no longer exists.

    Only the temporaries of this one target are touched, never other files of its folder.
    Returns the paths removed. A pid that was reused by a live process keeps its file.
    """
    path = Path(path)
    try:
        entries = list(path.parent.iterdir())
    except OSError:  # no folder yet, or one we may not list
        return []
    return [entry for entry in entries if _remove_if_stale(entry, path.name)]


def remove_stale(folder: str | os.PathLike, recursive: bool = False) -> int:
    """Delete every temporary in ``folder`` (and its sub-folders, with ``recursive``) whose writer
    no longer runs; returns how many were deleted. Readers never look at temporaries, so a
    complete cache on a read-only mount stays readable with its leftovers in place."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    entries = folder.rglob(f".*{TMP_MARK}*") if recursive else folder.glob(f".*{TMP_MARK}*")
    return sum(_remove_if_stale(entry, None) for entry in list(entries))
