"""Preprocessing workers die with their parent: SIGKILL the parent, and its pool is gone too."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import ctypes, os, sys, time
sys.path.insert(0, {repo!r})
from sj_qvm.datasets import _parallel
if {watchdog!r}:
    _parallel._die_with_parent = lambda: False  # as where prctl is unavailable
def work(folder, i):
    death_signal = ctypes.c_int(-1)
    ctypes.CDLL(None).prctl(2, ctypes.byref(death_signal), 0, 0, 0)  # PR_GET_PDEATHSIG
    with open(os.path.join(folder, str(os.getpid())), "w") as f:
        f.write(str(death_signal.value))
    time.sleep(120)
_parallel.run_tasks(work, [({folder!r}, 0), ({folder!r}, 1)], ["a", "b"], "sleeping", num_workers=2)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait for a reaper that never comes)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("mechanism", ["prctl", "watchdog"])
def test_workers_exit_when_the_parent_is_killed(tmp_path, mechanism):
    script = SCRIPT.format(repo=str(REPO), folder=str(tmp_path), watchdog=mechanism == "watchdog")
    parent = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            workers = [int(p.name) for p in tmp_path.iterdir() if p.read_text()]
            time.sleep(0.05)
        assert len(workers) == 2, f"the workers did not start (parent exit code {parent.poll()})"
        expected_signal = 0 if mechanism == "watchdog" else signal.SIGKILL
        assert all(int((tmp_path / str(pid)).read_text()) == expected_signal for pid in workers)
        assert all(_running(pid) and _parent_of(pid) == parent.pid for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        survivors = [pid for pid in workers if _running(pid)]
        assert not survivors, f"workers {survivors} outlived their parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in workers:  # only the processes this test started
            if _running(pid):
                os.kill(pid, signal.SIGKILL)



@pytest.mark.parametrize("progress", [True, False])
def test_the_progress_bar_shows_only_when_asked(progress, capsys):
    from sj_qvm.datasets import _parallel
    _parallel.run_tasks(abs, [(-1,), (2,)], ["a", "b"], "counting", num_workers=0,
                        progress=progress)
    assert ("counting" in capsys.readouterr().err) == progress
