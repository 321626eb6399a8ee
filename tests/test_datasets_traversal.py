"""Names read from dataset files never reach outside ``root`` and ``cache_dir``."""

import pytest

from sj_qvm.datasets import CIFAR10DVS, DVSGesture
from sj_qvm.datasets.dvs_gesture import read_trial_list
from sj_qvm.datasets.synthetic import write_cifar10_dvs, write_dvs_gesture


def listing(root):
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.fixture
def layout(tmp_path):
    """A release in ``tmp/data/root``, a recording with its labels outside it in ``tmp/data``."""
    data = tmp_path / "data"
    root = write_dvs_gesture(data / "root", users=(1,), lightings=("led",), events_per_sample=200)
    folder = root / "DvsGesture"
    for suffix in (".aedat", "_labels.csv"):
        (data / f"x{suffix}").write_bytes((folder / f"user01_led{suffix}").read_bytes())
    (folder / "trials_to_test.txt").write_text("user01_led.aedat\n")
    return data, root


@pytest.mark.parametrize("name", [
    "../../x.aedat", "{data}/x.aedat", "../DvsGesture/user01_led.aedat", "user01_led", "user1_led.aedat",
    "user30_led.aedat", "user00_led.aedat", "user01_sunlight.aedat", "user01_led.aedat.aedat",
    "USER01_LED.AEDAT", "user01_led.aedat/../../../x.aedat",
])
def test_trial_names_outside_the_release_form_are_rejected(layout, tmp_path, name):
    data, root = layout
    name = name.format(data=data)
    listed = root / "DvsGesture" / "trials_to_train.txt"
    listed.write_text(f"user01_led.aedat\n\n{name}\n")
    before = listing(data)
    with pytest.raises(ValueError) as error:
        DVSGesture(root, frames_number=2, cache_dir=data / "root" / "cache", num_workers=0)
    assert str(error.value).startswith(f"{listed}: line 3 must name a recording userNN_<lighting>.aedat")
    assert repr(name) in str(error.value)
    assert listing(data) == before  # nothing written anywhere, inside or outside the cache


def test_real_release_names_are_accepted(tmp_path):
    listed = tmp_path / "trials_to_train.txt"
    names = [f"user{u:02d}_{light}.aedat" for u in (1, 9, 10, 23, 29)
             for light in ("fluorescent", "fluorescent_led", "lab", "led", "natural")]
    listed.write_bytes("\r\n".join(names).encode() + b"\r\n")  # the release's CRLF lines
    assert read_trial_list(listed) == [n[:-6] for n in names]


def test_trial_list_duplicates_and_bad_bytes(tmp_path):
    listed = tmp_path / "trials_to_test.txt"
    listed.write_text("user24_led.aedat\nuser25_lab.aedat\nuser24_led.aedat\n")
    with pytest.raises(ValueError, match=rf"{listed}: line 3 lists user24_led\.aedat again \(first on line 1\)"):
        read_trial_list(listed)
    listed.write_bytes(b"user24_led.aedat\nuser25_l\xffb.aedat\n")
    with pytest.raises(ValueError, match=rf"{listed}: line 2 is not UTF-8 text \(byte 0xff at column 9\)"):
        read_trial_list(listed)


def test_valid_list_reads_inside_the_release(layout):
    data, root = layout
    outside_before = {p for p in listing(data) if p.parts[0] != "root"}
    dataset = DVSGesture(root, train=False, frames_number=2, cache_dir=root / "cache", num_workers=0)
    assert len(dataset) == 11 and {s.trial for s in dataset.samples} == {"user01_led"}
    assert {p for p in listing(data) if p.parts[0] != "root"} == outside_before


def test_cifar10_dvs_lists_only_its_own_class_names(tmp_path):
    root = write_cifar10_dvs(tmp_path / "root", ids=range(2), events_per_sample=200)
    stray = root / "dog" / "cifar10_cat_7.aedat"
    stray.write_bytes((root / "cat" / "cifar10_cat_0.aedat").read_bytes())
    with pytest.raises(ValueError, match=rf"{stray}: expected a file name cifar10_dog_<n>\.aedat in {root / 'dog'}"):
        CIFAR10DVS(root)
    stray.unlink()
    odd = root / "dog" / "cifar10_dog_..aedat"
    odd.write_bytes(b"")
    with pytest.raises(ValueError, match=r"cifar10_dog_\.\.aedat: expected a file name cifar10_<class>_<n>\.aedat"):
        CIFAR10DVS(root)
    odd.unlink()
    (root / "dog" / "cifar10_dog_1.aedat.part").write_bytes(b"")  # not listed: not *.aedat
    cache = tmp_path / "cache"
    dataset = CIFAR10DVS(root, frames_number=2, cache_dir=cache, num_workers=0)
    entries = {p.relative_to(cache) for p in cache.rglob("*") if p.is_file()}
    assert len(entries) == len(dataset) == 20  # first900 of 2 per class: both train
    assert {p.parts[2] for p in entries} == set(CIFAR10DVS.classes) and {len(p.parts) for p in entries} == {4}
