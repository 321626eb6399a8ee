"""Killed-cache simulations: a writer dying halfway leaves nothing that passes for a complete entry."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sj_qvm.atomic import TMP_MARK as _TMP
from sj_qvm.atomic import temp_path
from sj_qvm.datasets import DVSGesture, _cache
from sj_qvm.datasets.synthetic import write_dvs_gesture

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("gesture")
    return write_dvs_gesture(root, users=(1, 2), lightings=("led",), events_per_sample=600)


def entries(cache):
    return sorted(p for p in cache.rglob("*") if p.is_file())


def snapshot(cache):
    return {p.relative_to(cache): _cache.load_entry(p) for p in entries(cache)}


def assert_same_cache(left, right):
    a, b = snapshot(left), snapshot(right)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert np.array_equal(a[name][key], b[name][key]), (name, key)


def half_then(action, fail_on_call):
    """A replacement for _cache._write that writes half an entry on call ``fail_on_call``, then acts."""
    real = _cache._write
    calls = {"n": 0}

    def writer(f, arrays, compress):
        calls["n"] += 1
        if calls["n"] < fail_on_call:
            return real(f, arrays, compress)
        import io
        buffer = io.BytesIO()
        real(buffer, arrays, compress)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        action()

    return writer


def test_writer_failing_halfway_then_fresh_instance_rebuilds(release, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    DVSGesture(release, frames_number=4, cache_dir=clean, num_workers=0)

    broken = tmp_path / "broken"

    def die():
        raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(_cache, "_write", half_then(die, fail_on_call=7))
    with pytest.raises(KeyboardInterrupt):
        DVSGesture(release, frames_number=4, cache_dir=broken, num_workers=0)
    survivors = entries(broken)
    assert len(survivors) == 6  # the six entries written before the kill, each complete
    assert all(_TMP not in p.name for p in survivors)
    snapshot(broken)  # every entry left behind loads
    stamps = {p: p.stat().st_mtime_ns for p in survivors}

    monkeypatch.undo()
    DVSGesture(release, frames_number=4, cache_dir=broken, num_workers=0)
    assert_same_cache(broken, clean)
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())  # resumed, not redone


def test_process_killed_mid_write_leaves_only_a_temp_file(release, tmp_path):
    cache = tmp_path / "killed"
    script = f"""
import io, os, sys
sys.path.insert(0, {str(REPO)!r})
from sj_qvm.atomic import TMP_MARK as _TMP
from sj_qvm.atomic import temp_path
from sj_qvm.datasets import DVSGesture, _cache
real = _cache._write
calls = [0]
def writer(f, arrays, compress):
    calls[0] += 1
    if calls[0] < 9:
        return real(f, arrays, compress)
    buffer = io.BytesIO()
    real(buffer, arrays, compress)
    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    f.flush()
    os._exit(9)  # no cleanup, no finally: as SIGKILL
_cache._write = writer
DVSGesture({str(release)!r}, frames_number=4, cache_dir={str(cache)!r}, num_workers=0)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 9, result.stderr
    left = entries(cache)
    temps = [p for p in left if _TMP in p.name]
    assert len(temps) == 1 and len(left) == 9  # 8 complete entries and the torn one
    (torn,) = temps  # .<name>.tmp-<pid>
    target = torn.with_name(torn.name[1:].rsplit(_TMP, 1)[0])
    assert torn.name.startswith(".") and target.suffix == ".npz" and not target.exists()

    clean = tmp_path / "clean"
    DVSGesture(release, frames_number=4, cache_dir=clean, num_workers=0)
    dataset = DVSGesture(release, frames_number=4, cache_dir=cache, num_workers=0)
    assert not any(_TMP in p.name for p in entries(cache))  # the dead writer's file is gone
    assert_same_cache(cache, clean)
    assert len(dataset) == 22


def test_save_entry_replaces_atomically(tmp_path):
    path = tmp_path / "entry.npz"
    _cache.save_entry(path, frames=np.arange(3, dtype=np.uint8))
    _cache.save_entry(path, frames=np.arange(5, dtype=np.uint8))
    assert _cache.load_entry(path)["frames"].tolist() == [0, 1, 2, 3, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["entry.npz"]


def test_remove_stale_keeps_files_of_live_processes(tmp_path):
    mine = temp_path(tmp_path / "a.npz")  # this live process's: another thread may be writing it
    dead = tmp_path / f".b.npz{_TMP}999999999"
    mine.write_bytes(b"x")
    dead.write_bytes(b"x")
    assert _cache.remove_stale(tmp_path) == 1
    assert mine.exists() and not dead.exists()


def test_compact_counts():
    assert _cache.compact_counts(np.array([0, 255])).dtype == np.uint8
    assert _cache.compact_counts(np.array([0, 256])).dtype == np.uint16
    assert _cache.compact_counts(np.array([70_000])).dtype == np.uint32
    assert _cache.compact_counts(np.zeros((0,), dtype=np.int64)).dtype == np.uint8
