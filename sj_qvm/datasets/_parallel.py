"""Run preprocessing tasks in worker processes, with a tqdm bar, re-raising the first failure.

Workers never outlive the process that started them. On Linux each worker asks the kernel for
SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``, through ctypes; the kernel sends it
when the parent *thread* that forked the worker ends, and :func:`run_tasks` outlives its pool);
elsewhere, or where prctl is unavailable, a daemon thread in the worker polls the parent pid once
a second. Either way a worker whose parent is already gone when it starts exits at once. Under
the ``forkserver`` start method the parent is the fork server, which itself exits with us.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..checks import check_int

__all__ = ["run_tasks", "default_workers", "check_workers"]

_PR_SET_PDEATHSIG = 1
_WATCHDOG_PERIOD_S = 1.0


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def check_workers(num_workers) -> None:
    """Raise unless ``num_workers`` is ``None`` (:func:`default_workers`) or an int >= 0."""
    if num_workers is not None:
        check_int(num_workers, "num_workers", minimum=0)


def run_tasks(
    function: Callable,
    tasks: Sequence[tuple],
    names: Sequence[str],
    desc: str,
    num_workers: int | None = None,
    progress: bool = True,
) -> None:
    """Call ``function(*task)`` for every task; ``names[i]`` names task i's input file.

    Processes, not threads: the work is Python and numpy that holds the GIL. Each worker keeps
    torch (and so the event counter) to one thread, as DataLoader workers do. ``num_workers=0``
    runs in this process (for debugging). A failing task cancels the rest and its exception is
    raised here with its type kept and the file named (in the message, or else in a note).
    ``progress``: a tqdm bar (cleared when done).
    """
    check_workers(num_workers)
    if not tasks:
        return
    workers = default_workers() if num_workers is None else num_workers
    with tqdm(total=len(tasks), desc=desc, unit="file", leave=False, disable=not progress) as bar:
        if workers == 0 or len(tasks) == 1:
            for task, name in zip(tasks, names):
                _call(function, task, name)
                bar.update()
            return
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), initializer=_init_worker,
                                 initargs=(os.getpid(), multiprocessing.get_start_method())) as pool:
            futures = {pool.submit(function, *task): name for task, name in zip(tasks, names)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    error = future.exception()
                    if error is not None:
                        for other in pending:
                            other.cancel()
                        _name(error, futures[future])
                        raise error
                    bar.update()


def _init_worker(creator: int, start_method: str) -> None:
    torch.set_num_threads(1)
    parent = os.getppid()
    if not _die_with_parent():
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent or (start_method != "forkserver" and parent != creator):
        os._exit(1)  # the parent died before the request took effect


def _die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_WATCHDOG_PERIOD_S)
    os._exit(1)


def _call(function: Callable, task: tuple, name: str) -> None:
    try:
        function(*task)
    except Exception as error:
        _name(error, name)
        raise


def _name(error: BaseException, name: str) -> None:
    if name not in str(error):
        error.add_note(f"while preprocessing {name}")
