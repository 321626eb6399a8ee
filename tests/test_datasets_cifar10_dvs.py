"""CIFAR10DVS on synthetic releases in tmp_path: splits against SpikingJelly's, frames, errors."""

import numpy as np
import pytest
import torch

import sj_reference
from sj_qvm.datasets import CIFAR10DVS, _cache, read_aedat2
from sj_qvm.datasets.cifar10_dvs import split_files
from sj_qvm.datasets.synthetic import write_cifar10_dvs

CLASSES = CIFAR10DVS.classes


def release_names(per_class=1000):
    return [[f"cifar10_{c}_{i}.aedat" for i in range(per_class)] for c in CLASSES]


def sj_split(names_by_class, **kwargs):
    """SpikingJelly's split_to_train_test_set on a dataset listed as its CIFAR10DVS lists files."""
    split_to_train_test_set = sj_reference.require("split_to_train_test_set")
    # torchvision's DatasetFolder: classes sorted, then files sorted as strings (.npz there)
    items = [(name.replace(".aedat", ".npz"), label)
             for label, names in enumerate(names_by_class) for name in sorted(n.replace(".aedat", ".npz") for n in names)]
    train, test = split_to_train_test_set(0.9, items, len(names_by_class), **kwargs)
    as_aedat = lambda subset: {items[i][0].replace(".npz", ".aedat") for i in subset.indices}
    return as_aedat(train), as_aedat(test)


def ids(names):
    return sorted(int(n.rsplit("_", 1)[1].split(".")[0]) for n in names)


def test_first900_is_sj_alphabetical_order():
    names = release_names()
    train = {n for part in split_files(names, "first900", True) for n in part}
    test = {n for part in split_files(names, "first900", False) for n in part}
    sj_train, sj_test = sj_split(names)
    assert train == sj_train and test == sj_test
    test_ids = ids(n for n in test if "_cat_" in n)
    assert test_ids == list(range(91, 100)) + list(range(909, 1000))  # not 900-999


def test_random_split_equals_sj_random_split_with_seed():
    names = [[f"cifar10_{c}_{i}.aedat" for i in range(40 + k)] for k, c in enumerate(CLASSES)]
    np.random.seed(7)
    sj_train, sj_test = sj_split(names, random_split=True)
    train = {n for part in split_files(names, "random", True, seed=7) for n in part}
    test = {n for part in split_files(names, "random", False, seed=7) for n in part}
    assert train == sj_train and test == sj_test
    other = {n for part in split_files(names, "random", True, seed=8) for n in part}
    assert other != train


def test_tebn_tests_on_ids_below_100():
    names = release_names()
    test = split_files(names, "tebn", False)
    train = split_files(names, "tebn", True)
    assert all(ids(part) == list(range(100)) for part in test)
    assert all(ids(part) == list(range(100, 1000)) for part in train)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_cifar10_dvs(tmp_path_factory.mktemp("cifar"), ids=range(95, 107), events_per_sample=800)


def test_splitting_reads_no_events(tmp_path):
    for c in CLASSES:
        (tmp_path / c).mkdir()
        for i in range(12):
            (tmp_path / c / f"cifar10_{c}_{i}.aedat").write_bytes(b"not an aedat file")
    train = CIFAR10DVS(tmp_path, train=True)
    test = CIFAR10DVS(tmp_path, train=False)
    assert len(train) == 110 and len(test) == 10  # ceil(0.9 * 12) = 11 per class
    with pytest.raises(ValueError, match=r"cifar10_airplane_0\.aedat"):
        train[0]  # the events are read on access, not before


@pytest.mark.parametrize("split", ["first900", "tebn", "random"])
def test_train_and_test_partition_the_release(release, split):
    train = CIFAR10DVS(release, train=True, split=split, seed=3)
    test = CIFAR10DVS(release, train=False, split=split, seed=3)
    train_names = {name for name, _ in train.samples}
    test_names = {name for name, _ in test.samples}
    assert not train_names & test_names and len(train_names | test_names) == 120
    if split == "tebn":
        assert len(test) == 50 and all(int(n.split("_")[-1][:-6]) < 100 for n in test_names)
    assert [label for _, label in train.samples] == sorted(label for _, label in train.samples)


def test_frames_equal_sj(release, tmp_path):
    _load_origin_data, integrate_events_by_fixed_frames_number = sj_reference.require(
        "cifar10_dvs_reader", "integrate_events_by_fixed_frames_number")
    dataset = CIFAR10DVS(release, train=False, frames_number=4, split_by="time", cache_dir=tmp_path, num_workers=2)
    assert len(dataset) == 10 * 1
    for (frames, label), (name, expected_label) in zip(dataset, dataset.samples):
        assert frames.dtype == torch.float32 and frames.shape == (4, 2, 128, 128)
        assert label == expected_label == CLASSES.index(name.split("/")[0])
        sj_events = _load_origin_data(str(release / name))
        assert np.array_equal(frames.numpy(), integrate_events_by_fixed_frames_number(sj_events, "time", 4, 128, 128))
    assert (tmp_path / f"cifar10_dvs_{_cache.CACHE_VERSION}" / "frames_T4_time").is_dir()


def test_events_mode_and_transforms(release):
    dataset = CIFAR10DVS(release, train=True, split="tebn", transform=len, target_transform=CLASSES.__getitem__)
    count, name = dataset[0]
    assert name == "airplane"
    assert count == len(read_aedat2(release / dataset.samples[0][0]))


def test_missing_root_names_layout_and_source(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        CIFAR10DVS(tmp_path)
    message = str(error.value)
    for needed in ("<class>/cifar10_<class>_<n>.aedat", "airplane", "truck",
                   "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671"):
        assert needed in message


def test_unknown_split_and_bad_file_names(release, tmp_path):
    with pytest.raises(ValueError, match=r"split must be one of \('first900', 'tebn', 'random'\)"):
        CIFAR10DVS(release, split="last100")
    for c in CLASSES:
        (tmp_path / c).mkdir()
    (tmp_path / "cat" / "cat_7.aedat").write_bytes(b"")
    with pytest.raises(ValueError, match=r"cat_7\.aedat: expected a file name cifar10_<class>_<n>\.aedat"):
        CIFAR10DVS(tmp_path)
