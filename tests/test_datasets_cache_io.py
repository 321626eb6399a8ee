"""A complete cache on a read-only mount reads; writers' temporaries never outlive them."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sj_qvm import atomic
from sj_qvm.atomic import TMP_MARK
from sj_qvm.datasets import DVSGesture, _cache, read_aedat2, read_aedat31
from sj_qvm.datasets.aedat import write_aedat2, write_aedat31
from sj_qvm.datasets.synthetic import write_dvs_gesture

REPO = Path(__file__).resolve().parents[1]
T = 4
DEAD_PID = 999_999_999  # above any pid_max: never a live process


def _read_only_mounts_work(tmp_path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    command = f"mount --bind {probe} {probe} && mount -o remount,bind,ro {probe} && ! touch {probe}/x"
    result = subprocess.run(["unshare", "-rm", "sh", "-c", command], capture_output=True, timeout=30)
    return result.returncode == 0 and not (probe / "x").exists()


def run_read_only(folder: Path, script: str) -> subprocess.CompletedProcess:
    """Run ``script`` in a new mount namespace where ``folder`` is mounted read-only."""
    command = f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && exec "$0" -c "$1"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", command, sys.executable, script],
                          capture_output=True, text=True, timeout=120)


def digest(frames) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames, dtype=np.float32).tobytes()).hexdigest()


READER = """
import hashlib, sys
import numpy as np
sys.path.insert(0, {repo!r})
from sj_qvm.datasets import DVSGesture
try:
    dataset = DVSGesture({root!r}, frames_number={T}, cache_dir={cache!r}, num_workers=0)
    for frames, label in dataset:
        print(hashlib.sha256(np.ascontiguousarray(frames.numpy()).tobytes()).hexdigest(), label)
except ValueError as error:
    print("ValueError:", error)
"""


@pytest.fixture
def complete(tmp_path):
    if not _read_only_mounts_work(tmp_path):
        pytest.skip("cannot mount a folder read-only here (needs unshare -rm)")
    data = tmp_path / "data"
    root = write_dvs_gesture(data / "root", users=(1,), lightings=("led",), events_per_sample=300)
    cache = data / "cache"
    dataset = DVSGesture(root, frames_number=T, cache_dir=cache, num_workers=0)
    expected = [f"{digest(frames.numpy())} {label}" for frames, label in dataset]
    folder = cache / f"dvs_gesture_{_cache.CACHE_VERSION}" / f"frames_T{T}_number"
    leftover = folder / f".user01_led_05.npz{TMP_MARK}{DEAD_PID}"  # a dead writer's, undeletable now
    leftover.write_bytes(b"torn")
    return data, root, cache, folder, expected, leftover


def test_complete_cache_reads_on_a_read_only_mount(complete):
    data, root, cache, _, expected, leftover = complete
    stamps = {p: p.stat().st_mtime_ns for p in data.rglob("*")}
    result = run_read_only(data, READER.format(repo=str(REPO), root=str(root), cache=str(cache), T=T))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected, result.stdout + result.stderr
    assert leftover.exists()  # it could not be removed, and did not stop the reading
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*")} == stamps


@pytest.mark.parametrize("corruption", ["truncated", "wrong_shape"])
def test_bad_entry_on_a_read_only_mount_is_named(complete, corruption):
    data, root, cache, folder, _, _ = complete
    (entry,) = folder.glob("user01_led_02.*.npz")
    if corruption == "truncated":  # found when the dataset is built
        entry.write_bytes(entry.read_bytes()[:100])
    else:  # found when the sample is read
        with np.load(entry) as stored:
            arrays = {k: stored[k] for k in stored.files}
        arrays["frames"] = arrays["frames"][:3]
        np.savez(entry, **arrays)
    result = run_read_only(data, READER.format(repo=str(REPO), root=str(root), cache=str(cache), T=T))
    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-1]
    assert last.startswith(f"ValueError: {entry}: ") and "cannot be rebuilt" in last, result.stdout
    assert "Read-only file system" in last


def test_remove_stale_keeps_what_it_cannot_delete(tmp_path, monkeypatch):
    dead = tmp_path / f".a.npz{TMP_MARK}{DEAD_PID}"
    dead.write_bytes(b"x")

    def read_only(self, missing_ok=False):
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    assert _cache.remove_stale(tmp_path) == 0
    monkeypatch.undo()
    assert dead.exists() and _cache.remove_stale(tmp_path) == 1 and not dead.exists()


@pytest.mark.parametrize("write, read", [(write_aedat2, read_aedat2), (write_aedat31, read_aedat31)])
def test_aedat_writers_remove_dead_writers_temporaries(tmp_path, write, read):
    events = np.zeros(3, dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1")])
    events["t"] = [0, 5, 9]
    path = tmp_path / "rec.aedat"
    dead = tmp_path / f".rec.aedat{TMP_MARK}{DEAD_PID}"
    other = tmp_path / f".other.aedat{TMP_MARK}{DEAD_PID}"
    for leftover in (dead, other):
        leftover.write_bytes(b"torn")
    write(path, events)
    assert np.array_equal(read(path), events)
    assert not dead.exists() and other.exists()  # each write cleans up after its own file only
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, other.name])


def test_writes_never_follow_a_planted_link(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep me")
    cache = tmp_path / "cache"
    cache.mkdir()
    path = cache / "entry.npz"
    atomic.temp_path(cache / "entry.npz").symlink_to(outside)  # where we write first
    _cache.save_entry(path, frames=np.arange(3, dtype=np.uint8))
    assert outside.read_bytes() == b"keep me" and not path.is_symlink()
    assert _cache.load_entry(path)["frames"].tolist() == [0, 1, 2]
    path.unlink()
    path.symlink_to(outside)  # an entry that is a link is replaced, not written through
    _cache.save_entry(path, frames=np.arange(2, dtype=np.uint8))
    assert outside.read_bytes() == b"keep me" and not path.is_symlink()
    assert sorted(p.name for p in cache.iterdir()) == ["entry.npz"]


def test_failed_write_leaves_no_temporary(tmp_path):
    def fails(f):
        f.write(b"half")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        atomic.atomic_write(tmp_path / "rec.aedat", fails)
    assert list(tmp_path.iterdir()) == []


def test_killed_aedat_writer_leaves_a_temporary_the_next_write_removes(tmp_path):
    path = tmp_path / "rec.aedat"
    script = f"""
import os, sys
sys.path.insert(0, {str(REPO)!r})
import numpy as np
from sj_qvm import atomic
from sj_qvm.datasets.aedat import write_aedat2
def die(path, write, clean=True, fsync=True):
    with open(atomic.temp_path(path), "wb") as f:
        f.write(b"half")
    os._exit(9)  # as SIGKILL: no cleanup
import sj_qvm.datasets.aedat as aedat
aedat.atomic_write = die
write_aedat2({str(path)!r}, np.zeros(2, dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1")]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 9, result.stderr
    (torn,) = tmp_path.iterdir()
    assert torn.name.startswith(f".rec.aedat{TMP_MARK}")
    write_aedat2(path, np.zeros(0, dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1")]))
    assert [p.name for p in tmp_path.iterdir()] == ["rec.aedat"]
