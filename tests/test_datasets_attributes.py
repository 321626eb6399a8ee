"""What every event dataset declares as class attributes (tonic's way), and the cache that
EventDataset prepares for all of them: checked on a non-square sensor, so W and H cannot swap."""

from pathlib import Path

import numpy as np
import pytest

from sj_qvm.datasets import CIFAR10DVS, DVSGesture, _cache, events_to_frames
from sj_qvm.datasets._base import EventDataset
from sj_qvm.datasets.aedat import DVS128_SENSOR_SIZE, EVENT_DTYPE, read_aedat2, write_aedat2
from sj_qvm.datasets.synthetic import write_cifar10_dvs, write_dvs_gesture

T = 3


@pytest.mark.parametrize("dataset, num_classes", [(DVSGesture, 11), (CIFAR10DVS, 10)])
def test_class_attributes(dataset, num_classes):
    assert dataset.sensor_size == DVS128_SENSOR_SIZE == (128, 128, 2)  # (W, H, P)
    assert dataset.size_hw == (128, 128)
    assert dataset.num_classes == len(dataset.classes) == num_classes == len(set(dataset.classes))
    assert dataset.url.startswith("https://")


def test_frames_are_polarities_by_height_by_width(tmp_path):
    gesture = DVSGesture(write_dvs_gesture(tmp_path / "g", users=(1,), lightings=("led",), events_per_sample=200),
                         frames_number=T, cache_dir=tmp_path / "c", num_workers=0)
    cifar = CIFAR10DVS(write_cifar10_dvs(tmp_path / "d", ids=range(1), events_per_sample=200), train=True,
                       frames_number=T, cache_dir=tmp_path / "c", num_workers=0)
    for dataset in (gesture, cifar):
        w, h, p = dataset.sensor_size
        assert dataset[0][0].shape == (T, p, h, w)
        assert {dataset[i][1] for i in range(len(dataset))} <= set(range(dataset.num_classes))


@pytest.mark.parametrize("dataset, root_part", [(DVSGesture, "ROOT/DvsGesture/"), (CIFAR10DVS, "ROOT/<class>/")])
def test_layout_help_is_the_one_text_users_see(tmp_path, dataset, root_part):
    text = dataset.layout_help("ROOT")
    assert root_part in text and dataset.url in text and "offline stand-in" in text
    with pytest.raises(FileNotFoundError) as error:
        dataset(tmp_path / "nowhere")
    assert str(error.value).endswith(dataset.layout_help(tmp_path / "nowhere"))


def _declare(**attributes):
    base = dict(sensor_size=(6, 4, 2), classes=("a", "b"), num_classes=2, url="https://example.org/",
                cache_name="toy")
    base.update(attributes)
    base.setdefault("layout_help", classmethod(lambda cls, root: f"put the toy recordings in {root}"))
    return type("Toy", (EventDataset,), {k: v for k, v in base.items() if v is not None})


def test_a_dataset_must_declare_its_attributes():
    with pytest.raises(ValueError, match=r"sensor_size must be \(W, H, P\).*got the pair \(4, 6\)"):
        _declare(sensor_size=(4, 6))
    with pytest.raises(TypeError, match=r"Toy.num_classes is 3, but it has 2 classes"):
        _declare(num_classes=3)
    with pytest.raises(TypeError, match=r"Toy must declare the class attributes \['url'\]"):
        _declare(url=None)
    with pytest.raises(TypeError, match=r"Toy must define the classmethod layout_help\(root\)"):
        _declare(layout_help=None)
    assert _declare().size_hw == (4, 6) and _declare().layout_help("R") == "put the toy recordings in R"


def _build(aedat: Path, folder: Path, frames_number: int, split_by: str) -> None:
    source = _cache.fingerprint(aedat)
    events = read_aedat2(aedat)
    frames = events_to_frames(events, frames_number, split_by, Wide.sensor_size)
    _cache.save_entry(_cache.entry_path(folder, aedat.stem, source), frames=_cache.compact_counts(frames),
                      events_count=np.int64(len(events)), source=source)


class Wide(EventDataset):
    """A 6-wide, 4-high toy sensor: ``root/<n>.aedat``, label ``n % 2``."""

    sensor_size = (6, 4, 2)
    classes = ("even", "odd")
    num_classes = 2
    url = "https://example.org/wide"
    cache_name = "wide"

    @classmethod
    def layout_help(cls, root):
        return f"{root}/<n>.aedat"

    def __init__(self, root, frames_number, cache_dir):
        super().__init__(root, True, frames_number, "number", None, None, 0, cache_dir)
        self.samples = sorted(self.root.glob("*.aedat"))
        self._prepare(_build, [self.frames_dir],
                      [(a, [(self.frames_dir, a.stem)], (a, self.frames_dir, frames_number, "number"))
                       for a in self.samples], 0)

    def _item(self, index):
        aedat = self.samples[index]
        path, source = self._entry(self.frames_dir, aedat.stem, aedat)
        rebuild = lambda: _build(aedat, self.frames_dir, self.frames_number, "number")  # noqa: E731
        return self._load_frames(path, aedat, source, rebuild), int(aedat.stem) % 2


def _recording(path, n, seed):
    rng = np.random.default_rng(seed)
    events = np.zeros(n, dtype=EVENT_DTYPE)
    events["t"] = np.sort(rng.integers(0, 10_000, n))
    events["x"], events["y"], events["p"] = rng.integers(0, 6, n), rng.integers(0, 4, n), rng.integers(0, 2, n)
    events["x"][0] = 5  # the last column: off a sensor read as 4 wide
    write_aedat2(path, events)
    return events


def test_the_shared_cache_on_a_non_square_sensor(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    recorded = {i: _recording(root / f"{i}.aedat", 50 + i, i) for i in range(3)}
    dataset = Wide(root, T, tmp_path / "cache")
    assert dataset.cache == tmp_path / "cache" / f"wide_{_cache.CACHE_VERSION}"
    assert dataset.frames_dir == dataset.cache / f"frames_T{T}_number"
    entries = sorted(dataset.frames_dir.iterdir())
    assert len(entries) == 3 and all(e.suffix == ".npz" for e in entries)
    for i, (frames, label) in enumerate(dataset):
        assert frames.shape == (T, 2, 4, 6) and label == i % 2
        assert frames.sum() == len(recorded[i])  # every event counted once
        assert np.array_equal(frames.numpy(), events_to_frames(recorded[i], T, "number", (6, 4, 2)))
    stamps = {e: e.stat().st_mtime_ns for e in entries}
    Wide(root, T, tmp_path / "cache")  # complete: nothing rebuilt
    assert {e: e.stat().st_mtime_ns for e in sorted(dataset.frames_dir.iterdir())} == stamps
    _recording(root / "1.aedat", 80, 9)  # rewritten: its old entry is swept, a new one built
    again = Wide(root, T, tmp_path / "cache")
    assert len(list(dataset.frames_dir.iterdir())) == 3 and again[1][0].sum() == 80
