"""Emulated releases: CIFAR10-DVS's layout read back exactly, the split-aware arrangement, the
image folders (MNIST idx, CIFAR-10), and the pipeline's registry entry."""
import gzip

import numpy as np
import pytest

from sj_qvm.app import registry
from sj_qvm.datasets import CIFAR10DVS, emulate_dvs, read_aedat2, write_emulated_release
from sj_qvm.datasets.emulated_release import EMULATED_RELEASE_VERSION, arrange, write_digits_release
from sj_qvm.datasets.image_sources import (ImagesNotFound, read_idx, read_image_folder, read_mnist)

LIGHT = dict(duration_us=100_000, time_step_us=20_000, threshold_on=0.5, threshold_off=0.5)
"""Settings that emulate a recording in a few ms."""


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), rng.integers(0, 10, n)


def test_round_trip_through_the_cifar10dvs_reader(tmp_path):
    """Every file reads back as exactly the events emulated for it (the writer inverts the
    reader's x = 127 - addr[14:8], y = 127 - addr[7:1], p = 1 - addr[0])."""
    images, labels = _images(30)
    labels[:10] = np.arange(10)  # every class present
    write_emulated_release(images, labels, tmp_path, seed=5, num_workers=0, **LIGHT)
    dataset = [CIFAR10DVS(tmp_path, train=train) for train in (True, False)]
    assert sum(len(d) for d in dataset) == 30
    for i, (image, label) in enumerate(zip(images, labels)):
        file_id = int((labels[:i] == label).sum())
        name = CIFAR10DVS.classes[label]
        path = tmp_path / name / f"cifar10_{name}_{file_id}.aedat"
        expected = emulate_dvs(image, seed=(5, int(label), file_id), **LIGHT)
        assert len(expected) > 100 and np.array_equal(read_aedat2(path), expected)
    events, label = dataset[0][0]
    assert events.dtype == expected.dtype and label == 0


def test_layout_and_frames_are_the_real_ones(tmp_path):
    images, labels = _images(20)
    labels[:] = np.arange(20) % 10
    write_emulated_release(images, labels, tmp_path, num_workers=0, **LIGHT)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CIFAR10DVS.classes)
    for name in CIFAR10DVS.classes:
        files = sorted(p.name for p in (tmp_path / name).iterdir())
        assert files == [f"cifar10_{name}_0.aedat", f"cifar10_{name}_1.aedat"]
        assert (tmp_path / name / files[0]).read_bytes().startswith(b"#!AER-DAT2.0\r\n")
    dataset = CIFAR10DVS(tmp_path, train=True, frames_number=4, num_workers=0)
    for (frames, label), (relative, same) in zip(dataset, dataset.samples):
        assert frames.shape == (4, 2, 128, 128) and label == same
        assert frames.sum().item() == len(read_aedat2(tmp_path / relative))


def test_arrangement_tests_on_unseen_images(tmp_path):
    """The reader's "first900" test ids get distinct test images, never a training one; the
    training ids reuse training images when a class has too few."""
    train = (np.arange(50, dtype=np.float64)[:, None, None] * np.ones((1, 2, 2)) / 100,
             np.arange(50) % 10)                                   # 5 per class
    test = ((np.arange(30, dtype=np.float64)[:, None, None] + 50) * np.ones((1, 2, 2)) / 100,
            np.arange(30) % 10)                                    # 3 per class
    images, labels, ids = arrange(train, test, per_class=20, num_classes=10, seed=1)
    assert len(images) == 200 and np.bincount(labels).tolist() == [20] * 10
    write_emulated_release(images, labels, tmp_path, ids=ids, num_workers=0, duration_us=1_000,
                           time_step_us=1_000)
    identity = {(int(label), int(i)): float(image[0, 0]) for image, label, i in zip(images, labels, ids)}
    test_set = CIFAR10DVS(tmp_path, train=False)
    assert len(test_set) == 20  # 20 - ceil(0.9 * 20) = 2 per class
    shown = []
    for relative, label in test_set.samples:
        file_id = int(relative.rsplit("_", 1)[1].split(".")[0])
        shown.append(identity[(label, file_id)])
    assert min(shown) >= 0.5 and len(set(shown)) == len(shown)  # test images, each once
    train_shown = [identity[(lab, int(r.rsplit("_", 1)[1].split(".")[0]))]
                   for r, lab in CIFAR10DVS(tmp_path, train=True).samples]
    assert max(train_shown) < 0.5 and len(train_shown) == 180
    with pytest.raises(ValueError, match="class 0 has 1 test images; 2 distinct are needed"):
        arrange(train, (test[0][:1], test[1][:1]), per_class=20, num_classes=10)


def test_digits_release_and_registry_entry(tmp_path):
    root = tmp_path / "digits"
    calls = []
    real = registry._write_once

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    registry.EMULATED_DIGITS.write_synthetic(root, True, 0)
    marker = (root / ".sj_qvm_complete").read_text()
    assert f"emulated v{EMULATED_RELEASE_VERSION}" in marker and "10 per class" in marker
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*.aedat")}
    assert len(stamp) == 100
    registry.EMULATED_DIGITS.write_synthetic(root, True, 0)  # complete: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.aedat")} == stamp
    train = registry.EMULATED_DIGITS.make(root, True, 4)
    test = registry.EMULATED_DIGITS.make(root, False, 4)
    assert (len(train), len(test)) == (90, 10)
    assert not registry.EMULATED_DIGITS.flip and registry.EMULATED_DIGITS.num_classes == 10
    assert registry.EMULATED_PER_CLASS[False] - -(-registry.EMULATED_PER_CLASS[False] * 9 // 10) == 20
    del calls, counting


def test_release_arguments_are_checked(tmp_path):
    images, labels = _images(4)
    with pytest.raises(ValueError, match="labels must be"):
        write_emulated_release(images, labels[:3], tmp_path, **LIGHT)
    with pytest.raises(ValueError, match="class_names must be given for labels above 9"):
        write_emulated_release(images, [0, 1, 2, 12], tmp_path, **LIGHT)
    with pytest.raises(ValueError, match="class_names must be distinct lowercase words"):
        write_emulated_release(images, [0, 1, 0, 1], tmp_path, class_names=["Zero", "one"], **LIGHT)
    with pytest.raises(ValueError, match="ids must be distinct within each class"):
        write_emulated_release(images, [0, 0, 1, 1], tmp_path, ids=[0, 0, 0, 1], **LIGHT)
    with pytest.raises(ValueError, match=r"^threshold_on must be"):
        write_emulated_release(images, labels, tmp_path, threshold_on=-1.0)
    with pytest.raises(TypeError, match="image must be a uint8 array"):
        write_emulated_release(images.astype(np.int64), labels, tmp_path, **LIGHT)
    assert not any(tmp_path.iterdir())  # nothing written before the checks pass
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "airplane").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="airplane: is a symbolic link"):
        write_emulated_release(images, [0, 0, 0, 0], tmp_path / "root", **LIGHT)
    assert not any((tmp_path / "elsewhere").iterdir())


def test_custom_class_names_are_the_folders(tmp_path):
    images, _ = _images(4)
    write_emulated_release(images, [0, 1, 1, 0], tmp_path, class_names=["zero", "one"],
                           num_workers=0, **LIGHT)
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["cifar10_one_0.aedat", "cifar10_one_1.aedat"]


# ---- image folders -----------------------------------------------------------------------------

def _idx(data: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, data.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    return header + data.astype(np.uint8).tobytes()


def _write_mnist(root, name="MNIST", n=(12, 5), compress=False):
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in zip(("train", "t10k"), n):
        for kind, data in (("images-idx3", rng.integers(0, 256, (count, 28, 28))),
                           ("labels-idx1", rng.integers(0, 10, count))):
            path = raw / f"{prefix}-{kind}-ubyte"
            if compress:
                (raw / (path.name + ".gz")).write_bytes(gzip.compress(_idx(data)))
            else:
                path.write_bytes(_idx(data))
    return raw


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_folders_are_read(tmp_path, compress):
    _write_mnist(tmp_path, "FashionMNIST", compress=compress)
    kind, images, labels = read_image_folder(tmp_path, train=True)
    assert kind == "fashion_mnist" and images.shape == (12, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (12,) and labels.max() < 10
    assert read_mnist(tmp_path, "fashion_mnist", train=False)[0].shape == (5, 28, 28)


def test_truncated_or_wrong_idx_files_name_the_file(tmp_path):
    raw = _write_mnist(tmp_path)
    images = raw / "train-images-idx3-ubyte"
    data = images.read_bytes()
    images.write_bytes(data[:-100])
    with pytest.raises(ValueError, match=rf"{images}: truncated or corrupt: the data ends at byte offset {len(data) - 100}"):
        read_mnist(tmp_path)
    images.write_bytes(data[:10])
    with pytest.raises(ValueError, match=rf"{images}: truncated idx header at byte offset 10"):
        read_idx(images, 3)
    images.write_bytes(b"\x00\x00\x0d\x03" + data[4:])  # float data, not uint8
    with pytest.raises(ValueError, match=rf"{images}: byte offset 0: not an idx file of uint8"):
        read_idx(images, 3)
    images.write_bytes(bytes([0, 0, 8, 3]) + (10**9).to_bytes(4, "big") + data[8:])
    with pytest.raises(ValueError, match="dimensions .* exceed the bounds"):
        read_idx(images, 3)
    (raw / "train-images-idx3-ubyte.gz").unlink(missing_ok=True)
    images.unlink()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(data)[:50])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: cannot be read"):
        read_mnist(tmp_path)


def test_missing_folders_show_the_layout(tmp_path):
    for root in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(ImagesNotFound, match=r"Expected one of torchvision's layouts .*MNIST/raw/"):
            read_image_folder(root)
    raw = _write_mnist(tmp_path)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: missing .*Expected one of"):
        read_image_folder(tmp_path, train=False)
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(FileNotFoundError, match="holds several"):
        read_image_folder(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").unlink()
    import shutil
    shutil.rmtree(tmp_path / "MNIST")
    with pytest.raises(ImagesNotFound, match=r"cifar-10-batches-py: missing .*data_batch_1"):
        read_image_folder(tmp_path)


def test_cifar10_folder_is_read_as_luminance(tmp_path):
    from test_datasets_cifar import write_cifar10
    write_cifar10(tmp_path)
    kind, gray, labels = read_image_folder(tmp_path, train=True)
    from sj_qvm.datasets.cifar import CIFAR10
    rgb = CIFAR10(tmp_path, train=True).data.astype(np.float64)
    expected = np.rint(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114)
    assert kind == "cifar10" and gray.dtype == np.uint8
    assert np.abs(gray - expected).max() <= 1 and np.mean(gray == expected) > 0.99  # .5 ties
    assert np.array_equal(labels, CIFAR10(tmp_path, train=True).targets)


def test_images_spec_writes_a_folder_release(tmp_path):
    _write_mnist(tmp_path / "images", n=(30, 20))
    spec = registry.emulated_images_spec(tmp_path / "images")
    assert spec.name == "emulated_mnist" and not spec.flip
    spec.write_synthetic(tmp_path / "release", True, 0)
    assert len(spec.make(tmp_path / "release", False, None)) + len(spec.make(tmp_path / "release", True, None)) == 100
    with pytest.raises(ImagesNotFound, match="Expected one of"):
        registry.emulated_images_spec(tmp_path / "nothing")
