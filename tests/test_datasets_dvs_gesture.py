"""DVSGesture on synthetic releases in tmp_path: SpikingJelly's slicing and frames, caches, errors."""

import numpy as np
import pytest
import torch

import sj_reference
from sj_qvm.datasets import DVSGesture, _cache, events_to_frames, read_aedat31
from sj_qvm.datasets import dvs_gesture as dvs_gesture_module
from sj_qvm.datasets.synthetic import write_dvs_gesture


def sj_functions():
    return sj_reference.require("load_aedat_v3", "integrate_events_by_fixed_frames_number")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("gesture")
    return write_dvs_gesture(root, users=(3, 26), lightings=("lab", "led"), events_per_sample=1500)


def sj_samples(root, split):
    """SpikingJelly's slicing: load_aedat_v3, then start <= t < end per CSV row, class - 1."""
    load_aedat_v3, _ = sj_functions()
    folder = root / "DvsGesture"
    for name in (folder / f"trials_to_{split}.txt").read_text().split():
        events = load_aedat_v3(str(folder / name))
        rows = np.loadtxt(folder / name.replace(".aedat", "_labels.csv"), dtype=np.uint32, delimiter=",", skiprows=1)
        for label, start, end in rows:
            mask = np.logical_and(events["t"] >= start, events["t"] < end)
            yield {k: events[k][mask] for k in "txyp"}, int(label) - 1


@pytest.mark.parametrize("train, split", [(True, "train"), (False, "test")])
def test_events_equal_sj_slicing(release, tmp_path, train, split):
    dataset = DVSGesture(release, train=train, cache_dir=tmp_path, num_workers=0)
    expected = list(sj_samples(release, split))
    assert len(dataset) == len(expected) == 22
    for (events, label), (sj_events, sj_label) in zip(dataset, expected):
        assert label == sj_label and events.dtype == DVSGesture.dtype
        for key in "txyp":
            assert np.array_equal(events[key], sj_events[key])
    assert sorted(label for _, label in expected) == sorted(list(range(11)) * 2)


@pytest.mark.parametrize("frames_number, split_by", [(4, "number"), (5, "time")])
def test_frames_equal_sj(release, tmp_path, frames_number, split_by):
    _, integrate = sj_functions()
    dataset = DVSGesture(release, train=False, frames_number=frames_number, split_by=split_by, cache_dir=tmp_path)
    for (frames, label), (sj_events, sj_label) in zip(dataset, sj_samples(release, "test")):
        assert frames.dtype == torch.float32 and frames.shape == (frames_number, 2, 128, 128)
        assert label == sj_label
        expected = integrate(sj_events, split_by, frames_number, 128, 128)
        assert np.array_equal(frames.numpy(), expected)
        assert frames.sum() == len(sj_events["t"])
    assert (tmp_path / f"dvs_gesture_{_cache.CACHE_VERSION}" / f"frames_T{frames_number}_{split_by}").is_dir()


def test_transforms_and_cache_reuse(release, tmp_path, monkeypatch):
    DVSGesture(release, train=True, frames_number=4, cache_dir=tmp_path, num_workers=0)

    def no_reading(path):
        raise AssertionError(f"{path} was read again although the cache is complete")

    monkeypatch.setattr(dvs_gesture_module, "read_aedat31", no_reading)
    dataset = DVSGesture(
        release, train=True, frames_number=4, cache_dir=tmp_path, num_workers=0,
        transform=lambda frames: frames.sum(dim=(1, 2, 3)), target_transform=lambda label: label + 100,
    )
    per_frame, label = dataset[0]
    assert per_frame.shape == (4,) and label == 100
    assert DVSGesture(release, train=True, cache_dir=tmp_path, num_workers=0)[0][0].size == per_frame.sum()


def test_new_settings_get_their_own_cache_folder(release, tmp_path):
    four = DVSGesture(release, train=False, frames_number=4, cache_dir=tmp_path, num_workers=0)
    eight = DVSGesture(release, train=False, frames_number=8, split_by="time", cache_dir=tmp_path, num_workers=0)
    assert four[0][0].shape[0] == 4 and eight[0][0].shape[0] == 8
    folders = sorted(p.name for p in (tmp_path / f"dvs_gesture_{_cache.CACHE_VERSION}").iterdir())
    assert folders == ["events", "frames_T4_number", "frames_T8_time"]
    (entry,) = (tmp_path / f"dvs_gesture_{_cache.CACHE_VERSION}" / "frames_T4_number").glob("user26_lab_00.*.npz")
    stored = np.load(entry)["frames"]
    assert stored.dtype in (np.uint8, np.uint16)


def test_missing_root_names_layout_and_source(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        DVSGesture(tmp_path / "nowhere")
    message = str(error.value)
    for needed in ("DvsGesture/", "userNN_<lighting>.aedat", "_labels.csv", "trials_to_train.txt",
                   "https://research.ibm.com/interactive/dvsgesture/"):
        assert needed in message


def test_bad_frame_arguments_are_rejected_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="frames_number"):
        DVSGesture(tmp_path, frames_number=0)
    with pytest.raises(ValueError, match=r"split_by must be one of \('number', 'time'\)"):
        DVSGesture(tmp_path, frames_number=4, split_by="duration")


def _small_release(root, csv=None):
    write_dvs_gesture(root, users=(1,), lightings=("led",), events_per_sample=200)
    if csv is not None:
        (root / "DvsGesture" / "user01_led_labels.csv").write_text(csv)
    return root


@pytest.mark.parametrize(
    "csv, match",
    [
        ("label,start,end\n1,0,10\n", r"user01_led_labels\.csv: line 1 must be 'class,startTime_usec,endTime_usec'"),
        ("class,startTime_usec,endTime_usec\n1,0,10\n2,50,40\n", r"user01_led_labels\.csv: line 3 has endTime_usec 40 < startTime_usec 50"),
        ("class,startTime_usec,endTime_usec\n12,0,10\n", r"user01_led_labels\.csv: line 2 has class 12"),
        ("class,startTime_usec,endTime_usec\n1,0\n", r"user01_led_labels\.csv: line 2 must be three"),
    ],
)
def test_bad_labels_csv(tmp_path, csv, match):
    root = _small_release(tmp_path, csv)
    with pytest.raises(ValueError, match=match):
        DVSGesture(root, num_workers=0)


def test_worker_error_names_the_file(tmp_path):
    root = write_dvs_gesture(tmp_path, users=(1, 2), lightings=("led",), events_per_sample=300)
    broken = root / "DvsGesture" / "user02_led.aedat"
    broken.write_bytes(broken.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"user02_led\.aedat: packet at byte offset \d+"):
        DVSGesture(root, frames_number=4, num_workers=2)  # two processes


def test_slicing_keeps_file_order_and_windows(tmp_path):
    root = _small_release(tmp_path)
    events = read_aedat31(root / "DvsGesture" / "user01_led.aedat")
    rows = np.loadtxt(root / "DvsGesture" / "user01_led_labels.csv", delimiter=",", skiprows=1, dtype=np.int64)
    dataset = DVSGesture(root, num_workers=0)
    for (sample, label), (cls, start, end) in zip(dataset, rows):
        assert label == cls - 1
        assert np.array_equal(sample, events[(events["t"] >= start) & (events["t"] < end)])
        assert np.array_equal(events_to_frames(sample, 2).sum(), len(sample))
    outside = len(events) - sum(len(sample) for sample, _ in dataset)
    assert outside > 0  # background events between the gestures are not in any sample
