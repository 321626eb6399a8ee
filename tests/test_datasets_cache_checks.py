"""Cache entries are checked on every read: corrupt or stale entries are rebuilt with a warning
naming them, or named in a ValueError where they cannot be; symbolic links are never followed."""

import logging
import os
import zipfile

import numpy as np
import pytest

from sj_qvm.datasets import CIFAR10DVS, DVSGesture, _cache, events_to_frames, read_aedat31
from sj_qvm.datasets.aedat import write_aedat2, write_aedat31, read_aedat2
from sj_qvm.datasets.synthetic import write_cifar10_dvs, write_dvs_gesture

T = 4


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_dvs_gesture(tmp_path_factory.mktemp("gesture"), users=(1,), lightings=("led",), events_per_sample=300)


@pytest.fixture(scope="module")
def clean(release, tmp_path_factory):
    """The frames of every sample, from a cache nobody touched."""
    dataset = DVSGesture(release, frames_number=T, cache_dir=tmp_path_factory.mktemp("clean"), num_workers=0)
    return [frames.numpy() for frames, _ in dataset]


def frames_entry(cache, key="user01_led_03", folder=f"frames_T{T}_number"):
    """The one entry of sample ``key``: ``<key>.s<size>.m<mtime_ns>.npz``."""
    (entry,) = (cache / f"dvs_gesture_{_cache.CACHE_VERSION}" / folder).glob(f"{key}.s*.m*.npz")
    return entry


def good_arrays(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path):
    path.write_bytes(b"")


def wrong_key(path):
    arrays = good_arrays(path)
    arrays["frame"] = arrays.pop("frames")
    np.savez(path, **arrays)


def wrong_shape(path):  # [3, 2, 128, 128] where T = 4 was asked for
    arrays = good_arrays(path)
    arrays["frames"] = arrays["frames"][:3]
    np.savez(path, **arrays)


def negative_floats(path):  # float64 full of -1.5
    arrays = good_arrays(path)
    arrays["frames"] = np.full(arrays["frames"].shape, -1.5)
    np.savez(path, **arrays)


def signed_negative(path):  # the right sum, but with a negative count
    arrays = good_arrays(path)
    frames = arrays["frames"].astype(np.int16)
    frames[0, 0, 0, 0] -= 1
    frames[0, 0, 0, 1] += 1
    arrays["frames"] = frames
    np.savez(path, **arrays)


def one_count_more(path):  # dtype and shape right, the sum one more than the sample's events
    arrays = good_arrays(path)
    arrays["frames"][1, 0, 5, 5] += 1
    np.savez(path, **arrays)


def plain_npy(path):
    frames = good_arrays(path)["frames"]
    with open(path, "wb") as f:
        np.save(f, frames)


def huge_declared_shape(path):
    """An uncompressed entry whose frames header claims 10**11 frames: must not be allocated."""
    arrays = good_arrays(path)
    np.savez(path, **arrays)
    data = path.read_bytes()
    old = f"'shape': {arrays['frames'].shape}, }}".encode()
    new = f"'shape': (100000000000, 2, 128, 128), }}".encode()
    assert data.count(old) == 1 and len(new) > len(old)
    start = data.index(old)
    padding = len(new) - len(old)
    assert data[start + len(old) : start + len(old) + padding] == b" " * padding
    path.write_bytes(data[:start] + new + data[start + len(old) + padding :])


CORRUPTIONS = [truncated, empty, wrong_key, wrong_shape, negative_floats, signed_negative,
               one_count_more, plain_npy, huge_declared_shape]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("when", ["before_construction", "after_construction"])
def test_corrupt_frames_entry_is_rebuilt_with_a_warning(release, clean, tmp_path, caplog, corrupt, when):
    dataset = DVSGesture(release, frames_number=T, cache_dir=tmp_path, num_workers=0)
    entry = frames_entry(tmp_path)
    corrupt(entry)
    with pytest.raises(ValueError, match=str(entry)):
        _cache.check_frames(entry, _cache.load_entry(entry, 2**22), T, DVSGesture.size_hw, "number",
                            release / "DvsGesture" / "user01_led.aedat",
                            _cache.fingerprint(release / "DvsGesture" / "user01_led.aedat"))
    caplog.set_level(logging.WARNING, logger="sj_qvm.datasets")
    if when == "before_construction":
        dataset = DVSGesture(release, frames_number=T, cache_dir=tmp_path, num_workers=0)
    frames = [f.numpy() for f, _ in dataset]
    assert all(np.array_equal(a, b) for a, b in zip(frames, clean))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(entry) in warnings[0] and "rebuilding" in warnings[0], warnings
    _cache.check_frames(entry, _cache.load_entry(entry), T, DVSGesture.size_hw, "number",
                        release / "DvsGesture" / "user01_led.aedat",
                        _cache.fingerprint(release / "DvsGesture" / "user01_led.aedat"))


def test_corrupt_events_entry_is_rebuilt(release, tmp_path, caplog):
    dataset = DVSGesture(release, cache_dir=tmp_path, num_workers=0)
    expected = dataset[2][0]
    entry = frames_entry(tmp_path, "user01_led_02", "events")
    arrays = good_arrays(entry)
    arrays["events"] = DVSGesture(release, cache_dir=tmp_path, num_workers=0)[3][0]  # another window
    np.savez(entry, **arrays)
    caplog.set_level(logging.WARNING, logger="sj_qvm.datasets")
    assert np.array_equal(dataset[2][0], expected)
    assert any(str(entry) in r.getMessage() and "window" in r.getMessage() for r in caplog.records)


def test_symlinked_entry_is_not_followed(release, clean, tmp_path, caplog):
    cache = tmp_path / "cache"
    DVSGesture(release, frames_number=T, cache_dir=cache, num_workers=0)
    entry = frames_entry(cache)
    outside = tmp_path / "outside.npz"  # a valid entry of another sample, outside the cache
    outside.write_bytes(frames_entry(cache, "user01_led_04").read_bytes())
    before = outside.read_bytes()
    entry.unlink()
    entry.symlink_to(outside)
    caplog.set_level(logging.WARNING, logger="sj_qvm.datasets")
    dataset = DVSGesture(release, frames_number=T, cache_dir=cache, num_workers=0)
    assert np.array_equal(dataset[3][0].numpy(), clean[3])
    assert not entry.is_symlink() and outside.read_bytes() == before
    assert any(str(entry) in r.getMessage() for r in caplog.records)


def test_rewritten_recording_is_not_served_stale(release, tmp_path, caplog):
    root = tmp_path / "root"
    write_dvs_gesture(root, users=(1,), lightings=("led",), events_per_sample=300)
    aedat = root / "DvsGesture" / "user01_led.aedat"
    old = [f.numpy() for f, _ in DVSGesture(root, frames_number=T, cache_dir=tmp_path / "c", num_workers=0)]
    old_entry = frames_entry(tmp_path / "c", "user01_led_00")
    events = read_aedat31(aedat)
    events["p"] = 1 - events["p"]  # same size on disk: only the mtime tells
    stat = aedat.stat()
    write_aedat31(aedat, events)
    assert aedat.stat().st_size == stat.st_size
    os.utime(aedat, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later write, whatever the clock tick
    caplog.set_level(logging.WARNING, logger="sj_qvm.datasets")
    new = [f.numpy() for f, _ in DVSGesture(root, frames_number=T, cache_dir=tmp_path / "c", num_workers=0)]
    for before, after in zip(old, new):
        assert np.array_equal(after, before[:, ::-1])  # the polarity channels swapped
    assert any("stale" in r.getMessage() and str(old_entry) in r.getMessage() for r in caplog.records)
    assert not old_entry.exists() and frames_entry(tmp_path / "c", "user01_led_00") != old_entry


def test_recording_rewritten_after_construction_is_rebuilt_on_read(tmp_path, caplog):
    root = write_dvs_gesture(tmp_path / "root", users=(1,), lightings=("led",), events_per_sample=300)
    aedat = root / "DvsGesture" / "user01_led.aedat"
    dataset = DVSGesture(root, cache_dir=tmp_path / "c", num_workers=0)  # events mode
    events = read_aedat31(aedat)
    events["x"] = 127 - events["x"]
    stat = aedat.stat()
    write_aedat31(aedat, events)
    os.utime(aedat, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    caplog.set_level(logging.WARNING, logger="sj_qvm.datasets")
    sample = dataset.samples[5]
    expected = events[(events["t"] >= sample.start) & (events["t"] < sample.end)]
    assert np.array_equal(dataset[5][0], expected)
    assert any("user01_led_05" in r.getMessage() and "missing; rebuilding" in r.getMessage() for r in caplog.records)


def test_recording_gone_after_construction_names_the_entry(release, tmp_path):
    root = tmp_path / "root"
    write_dvs_gesture(root, users=(1,), lightings=("led",), events_per_sample=300)
    dataset = DVSGesture(root, frames_number=T, cache_dir=tmp_path / "c", num_workers=0)
    (root / "DvsGesture" / "user01_led.aedat").unlink()
    with pytest.raises(ValueError, match=r"frames_T4_number/user01_led_00: cannot be checked against its recording .*user01_led\.aedat"):
        dataset[0]


def test_rebuild_that_cannot_write_names_the_entry(release, tmp_path, monkeypatch):
    dataset = DVSGesture(release, frames_number=T, cache_dir=tmp_path, num_workers=0)
    wrong_shape(frames_entry(tmp_path))

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_cache.atomic, "atomic_write", no_space)
    with pytest.raises(ValueError, match=r"user01_led_03\.s\d+\.m\d+\.npz: frames have shape \[3, 2, 128, 128\].*cannot be rebuilt.*No space"):
        dataset[3]


def test_cifar10_dvs_entries_are_checked_and_fingerprinted(tmp_path, caplog):
    root = write_cifar10_dvs(tmp_path / "root", ids=range(2), events_per_sample=300)
    cache = tmp_path / "cache"
    dataset = CIFAR10DVS(root, train=True, frames_number=T, split_by="time", cache_dir=cache, num_workers=0)
    relative = dataset.samples[0][0]
    (entry,) = (cache / f"cifar10_dvs_{_cache.CACHE_VERSION}" / f"frames_T{T}_time").glob(
        relative.replace(".aedat", ".s*.npz"))
    negative_floats(entry)
    caplog.set_level(logging.WARNING, logger="sj_qvm.datasets")
    frames = dataset[0][0].numpy()
    assert np.array_equal(frames, events_to_frames(read_aedat2(root / relative), T, "time"))
    assert any(str(entry) in r.getMessage() and "dtype float64" in r.getMessage() for r in caplog.records)

    events = read_aedat2(root / relative)[::2]  # rewritten with half the events
    write_aedat2(root / relative, events)
    again = CIFAR10DVS(root, train=True, frames_number=T, split_by="time", cache_dir=cache, num_workers=0)
    assert np.array_equal(again[0][0].numpy(), events_to_frames(events, T, "time"))


def test_npz_members_are_checked_before_allocation(tmp_path):
    path = tmp_path / "entry.npz"
    _cache.save_entry(path, frames=np.zeros((T, 2, 128, 128), np.uint8))
    huge_declared_shape(path)
    with pytest.raises(ValueError, match=r"entry\.npz: frames\.npy declares 3276800000000000 bytes"):
        _cache.load_entry(path)
    _cache.save_entry(path, frames=np.zeros((T, 2, 128, 128), np.uint8))
    with pytest.raises(ValueError, match=r"entry\.npz: frames\.npy declares 131072 bytes; .* the entry may need 1000"):
        _cache.load_entry(path, max_bytes=1000)
    loaded = _cache.load_entry(path, max_bytes=131072)["frames"]
    assert loaded.shape == (T, 2, 128, 128) and loaded.flags.writeable and zipfile.is_zipfile(path)


def test_entries_read_as_numpy_writes_them(tmp_path):
    path = tmp_path / "entry.npz"
    events = np.zeros(5, dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1")])
    events["t"] = np.arange(5)
    arrays = {"events": events, "count": np.int64(7), "empty": np.zeros((0, 3), np.uint16),
              "fortran": np.asfortranarray(np.arange(6, dtype=np.uint32).reshape(2, 3))}
    for compress in (False, True):
        _cache.save_entry(path, compress=compress, **arrays)
        loaded = _cache.load_entry(path)
        assert loaded.keys() == arrays.keys()
        for key, value in arrays.items():
            assert loaded[key].dtype == np.asarray(value).dtype and np.array_equal(loaded[key], value), key


def test_flipped_compressed_byte_fails_the_crc(tmp_path):
    path = tmp_path / "entry.npz"
    _cache.save_entry(path, compress=True, frames=np.arange(4096, dtype=np.uint16))
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{path}: "):
        _cache.load_entry(path)
