"""Run preprocessing tasks in worker processes, with a tqdm bar, re-raising the first failure."""

from __future__ import annotations

import os
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

__all__ = ["run_tasks", "default_workers"]


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def run_tasks(
    function: Callable,
    tasks: Sequence[tuple],
    names: Sequence[str],
    desc: str,
    num_workers: int | None = None,
) -> None:
    """Call ``function(*task)`` for every task; ``names[i]`` names task i's input file.

    Processes, not threads: the work is Python and numpy that holds the GIL. Each worker keeps
    torch (and so the event counter) to one thread, as DataLoader workers do. ``num_workers=0``
    runs in this process (for debugging). A failing task cancels the rest and its exception is
    raised here with its type kept and the file named (in the message, or else in a note).
    """
    if not tasks:
        return
    workers = default_workers() if num_workers is None else num_workers
    with tqdm(total=len(tasks), desc=desc, unit="file") as bar:
        if workers == 0 or len(tasks) == 1:
            for task, name in zip(tasks, names):
                _call(function, task, name)
                bar.update()
            return
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), initializer=_one_thread) as pool:
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


def _one_thread() -> None:
    torch.set_num_threads(1)


def _call(function: Callable, task: tuple, name: str) -> None:
    try:
        function(*task)
    except Exception as error:
        _name(error, name)
        raise


def _name(error: BaseException, name: str) -> None:
    if name not in str(error):
        error.add_note(f"while preprocessing {name}")
