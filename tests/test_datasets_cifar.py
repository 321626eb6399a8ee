"""CIFAR-10/100 in torchvision's python layout: real-format files written here, read safely."""
import pickle

import numpy as np
import pytest

from sj_qvm.datasets.cifar import CIFAR10, CIFAR100, read_cifar_batch


def _write(path, obj, protocol=2):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def write_cifar10(root, n=6, seed=0, protocol=2):
    """A tiny release in the real layout: 5 train batches, a test batch, batches.meta."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        _write(base / name, {"batch_label": name, "labels": labels, "data": data,
                             "filenames": [f"{i}.png" for i in range(n)]}, protocol)
        batches[name] = (data, labels)
    _write(base / "batches.meta", {"num_cases_per_batch": n, "num_vis": 3072,
                                   "label_names": list("abcdefghij")}, protocol)
    return batches


def write_cifar100(root, n=7, seed=0):
    """Keys and names as bytes, as Python 2's str values load under encoding="bytes"."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    for name in ("train", "test"):
        _write(base / name, {b"filenames": [], b"batch_label": b"x",
                             b"fine_labels": rng.integers(0, 100, n).tolist(),
                             b"coarse_labels": rng.integers(0, 20, n).tolist(),
                             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)})
    _write(base / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                           b"coarse_label_names": [f"s{i}".encode() for i in range(20)]})


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_pixels_and_labels(tmp_path, protocol):
    batches = write_cifar10(tmp_path, protocol=protocol)
    train, test = CIFAR10(tmp_path, train=True), CIFAR10(tmp_path, train=False)
    assert len(train) == 30 and len(test) == 6 and train.classes == list("abcdefghij")
    data, labels = batches["data_batch_2"]
    img, label = train[6 + 4]                     # the 5th image of the second batch
    arr = np.asarray(img)
    assert arr.shape == (32, 32, 3) and label == labels[4]
    # channel-major rows: red plane first, then green, then blue, each 32 x 32 row-major
    assert arr[3, 5, 0] == data[4, 3 * 32 + 5] and arr[3, 5, 2] == data[4, 2048 + 3 * 32 + 5]
    assert test.targets == batches["test_batch"][1]


def test_same_as_torchvision(tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    write_cifar10(tmp_path)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: True)
    tv = torchvision.datasets.CIFAR10(tmp_path, train=True, download=False)
    ours = CIFAR10(tmp_path, train=True)
    assert np.array_equal(tv.data, ours.data) and tv.targets == ours.targets
    assert tv.classes == ours.classes


def test_cifar100_fine_labels(tmp_path):
    write_cifar100(tmp_path)
    ds = CIFAR100(tmp_path, train=False)
    assert len(ds) == 7 and len(ds.classes) == 100 and ds.num_classes == 100
    assert all(0 <= t < 100 for t in ds.targets)


def test_transform_applies(tmp_path):
    write_cifar10(tmp_path)
    ds = CIFAR10(tmp_path, transform=lambda im: np.asarray(im).mean(), target_transform=lambda y: -y)
    x, y = ds[0]
    assert isinstance(x, float) and y <= 0


def test_missing_root_shows_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        CIFAR10(tmp_path)
    msg = str(e.value)
    assert "cifar-10-batches-py" in msg and "data_batch_1" in msg and "cifar-10-python.tar.gz" in msg


class _Boom:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


class _Huge:
    def __reduce__(self):
        return (bytes, (1 << 40,))   # a 1 TiB allocation


def test_crafted_pickle_is_refused(tmp_path):
    write_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    _write(bad, {b"data": _Boom(), b"labels": []})
    with pytest.raises(ValueError, match="data_batch_3.*refusing to load (posix|os|nt).system"):
        CIFAR10(tmp_path)
    _write(bad, {b"data": _Huge(), b"labels": []})  # bytes() is allowed for empty arrays only
    with pytest.raises(ValueError, match=r"data_batch_3: not a CIFAR pickle .*TypeError"):
        CIFAR10(tmp_path)


def test_truncated_and_wrong_files(tmp_path):
    write_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    raw = (base / "data_batch_1").read_bytes()
    (base / "data_batch_1").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"data_batch_1: not a CIFAR pickle \(at byte offset \d+"):
        read_cifar_batch(base / "data_batch_1", "labels", 10)
    _write(base / "data_batch_1", {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]})
    with pytest.raises(ValueError, match="data_batch_1: 'data' must be uint8"):
        read_cifar_batch(base / "data_batch_1", "labels", 10)
    _write(base / "data_batch_1", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
    with pytest.raises(ValueError, match=r"ints in \[0, 10\)"):
        read_cifar_batch(base / "data_batch_1", "labels", 10)
    _write(base / "data_batch_1", [1, 2])
    with pytest.raises(ValueError, match="not a dict"):
        read_cifar_batch(base / "data_batch_1", "labels", 10)
    (base / "data_batch_1").write_bytes(b"")
    with pytest.raises(ValueError, match="data_batch_1"):
        read_cifar_batch(base / "data_batch_1", "labels", 10)


@pytest.mark.parametrize("labels, what", [
    (["cat", "dog"], r"<U3 \[2\], e\.g\. \['cat', 'dog'\]"),
    ([b"c", b"d"], r"\|S1 \[2\]"),
    (np.array([[1], [2]]), r"int64 \[2, 1\], e\.g\. \[1, 2\]"),
    ([[1], [2, 3]], "lists of different lengths"),
    ([0.0, 1.0], r"float64 \[2\]"),
    ([None, 1], r"object \[2\]"),
])
def test_labels_that_are_not_one_int_per_image(tmp_path, labels, what):
    write_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_4"
    _write(bad, {b"data": np.zeros((2, 3072), np.uint8), b"labels": labels})
    with pytest.raises(ValueError, match=r"data_batch_4: 'labels' must be one int in \[0, 10\) "
                                         rf"per image, got {what}"):
        CIFAR10(tmp_path)


def test_batch_without_images(tmp_path):
    write_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    _write(bad, {b"data": np.zeros((0, 3072), np.uint8), b"labels": []})
    with pytest.raises(ValueError, match=r"test_batch: holds no image \('data' is uint8 \[0, 3072\]\)"):
        CIFAR10(tmp_path, train=False)


def test_bad_arguments(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(TypeError, match="train"):
        CIFAR10(tmp_path, train="yes")
    with pytest.raises(TypeError, match="transform"):
        CIFAR10(tmp_path, transform=3)
