"""sj_qvm.atomic, the one atomic writer: a failed write keeps the old file and leaves no temporary;
temporaries are named .<name>.tmp-<pid>, and those of dead writers are removed."""

import os
import subprocess
import sys

import pytest

from sj_qvm import atomic
from sj_qvm.atomic import TMP_MARK, atomic_write, remove_stale, remove_stale_temporaries, temp_path, write_atomic

DEAD_PID = 999_999_999  # above any pid_max: never a live process


@pytest.fixture
def live_pid():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def test_temporary_is_hidden_beside_the_target_and_renamed_onto_it(tmp_path):
    path = tmp_path / "results.json"
    seen = []

    def write(f):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        f.write(b"new")

    atomic_write(path, write)
    assert temp_path(path) == tmp_path / f".results.json{TMP_MARK}{os.getpid()}"
    assert seen == [[temp_path(path).name]]  # written under the temporary, never under the final name
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


class Crash(Exception):
    pass


def _fail_while_writing(f):
    f.write(b"half")
    raise Crash("disk gone")


def _interrupt_while_writing(f):
    f.write(b"half")
    raise KeyboardInterrupt


@pytest.mark.parametrize("write, error", [(_fail_while_writing, Crash), (_interrupt_while_writing, KeyboardInterrupt)])
def test_a_failing_write_keeps_the_old_file_and_no_temporary(tmp_path, write, error):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old")
    with pytest.raises(error):
        atomic_write(path, write)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_a_failing_flush_or_rename_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, step):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"old")

    def fails(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, step, fails)
    with pytest.raises(OSError, match="No space"):
        write_atomic(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]


def test_without_fsync_nothing_is_flushed_to_disk(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: calls.append(fd))
    atomic_write(tmp_path / "entry.npz", lambda f: f.write(b"x"), fsync=False)
    assert calls == []
    write_atomic(tmp_path / "results.json", b"y")
    assert len(calls) == 2  # the file before the rename, the folder after it


def test_each_write_removes_its_own_targets_dead_temporaries_only(tmp_path, live_pid):
    path = tmp_path / "results.json"
    dead = tmp_path / f".results.json{TMP_MARK}{DEAD_PID}"
    kept = [tmp_path / f".results.json{TMP_MARK}{live_pid}",  # a live writer's
            tmp_path / f".other.json{TMP_MARK}{DEAD_PID}",  # another target's
            tmp_path / f"results.json{TMP_MARK}{DEAD_PID}",  # not a temporary's name (no dot)
            tmp_path / f".results.json{TMP_MARK}x1"]  # nor this (no pid)
    for p in [dead, *kept]:
        p.write_bytes(b"torn")
    write_atomic(path, b"new")
    assert not dead.exists() and all(p.exists() for p in kept) and path.read_bytes() == b"new"


def test_remove_stale_temporaries_returns_what_it_removed(tmp_path):
    path = tmp_path / "checkpoint.pt"
    dead = tmp_path / f".checkpoint.pt{TMP_MARK}{DEAD_PID}"
    dead.write_bytes(b"")
    odd = tmp_path / f".checkpoint.pt{TMP_MARK}{10 ** 30}"
    odd.mkdir()  # a folder under a temporary's name is left, without an error
    assert remove_stale_temporaries(path) == [dead] and odd.is_dir()
    assert remove_stale_temporaries(tmp_path / "missing" / "f") == []


def test_remove_stale_sweeps_a_folder_tree_and_keeps_live_writers(tmp_path, live_pid):
    sub = tmp_path / "frames_T4_number" / "cat"
    sub.mkdir(parents=True)
    dead = [tmp_path / f".a.npz{TMP_MARK}{DEAD_PID}", sub / f".b.npz{TMP_MARK}{DEAD_PID}"]
    kept = [sub / f".c.npz{TMP_MARK}{live_pid}", temp_path(sub / "d.npz"), sub / "e.npz"]
    for p in dead + kept:
        p.write_bytes(b"x")
    assert remove_stale(tmp_path) == 1 and not dead[0].exists() and dead[1].exists()
    assert remove_stale(tmp_path, recursive=True) == 1 and not dead[1].exists()
    assert all(p.exists() for p in kept)  # this process's own temporary too: a thread may be writing it
    assert remove_stale(tmp_path / "nowhere") == 0


def test_an_earlier_process_with_our_pid_leaves_nothing_behind_our_write(tmp_path):
    path = tmp_path / "entry.npz"
    temp_path(path).write_bytes(b"torn by a killed process that had our pid")
    atomic_write(path, lambda f: f.write(b"whole"), clean=False)
    assert path.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["entry.npz"]
