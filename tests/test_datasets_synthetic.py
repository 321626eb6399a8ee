"""Synthetic releases: real layouts, determinism, and events a small CNN learns in a few CPU epochs."""

import numpy as np
import pytest
import torch
from torch import nn

from sj_qvm.app.registry import DVS_GESTURE
from sj_qvm.datasets import CIFAR10DVS, DVSGesture, read_aedat2, read_aedat31
from sj_qvm.datasets.synthetic import write_cifar10_dvs, write_dvs_gesture


def test_gesture_layout(tmp_path):
    root = write_dvs_gesture(tmp_path, users=(5, 23, 24, 29), lightings=("lab", "natural"), events_per_sample=300)
    folder = root / "DvsGesture"
    assert (folder / "trials_to_train.txt").read_text().split() == [
        "user05_lab.aedat", "user05_natural.aedat", "user23_lab.aedat", "user23_natural.aedat"]
    assert (folder / "trials_to_test.txt").read_text().split() == [
        "user24_lab.aedat", "user24_natural.aedat", "user29_lab.aedat", "user29_natural.aedat"]
    lines = (folder / "user24_lab_labels.csv").read_text().splitlines()
    assert lines[0] == "class,startTime_usec,endTime_usec"
    rows = np.array([list(map(int, line.split(","))) for line in lines[1:]])
    assert rows[:, 0].tolist() == list(range(1, 12))
    assert (rows[:, 1] < rows[:, 2]).all() and (rows[1:, 1] > rows[:-1, 2]).all()
    assert read_aedat31(folder / "user24_lab.aedat").dtype.names == ("t", "x", "y", "p")
    with pytest.raises(ValueError, match="users must lie in 1..29"):
        write_dvs_gesture(tmp_path, users=(30,))


def test_cifar_layout(tmp_path):
    root = write_cifar10_dvs(tmp_path, samples_per_class=2, events_per_sample=300)
    expected = {f"{c}/cifar10_{c}_{i}.aedat" for c in CIFAR10DVS.classes for i in (0, 1)}
    assert {str(p.relative_to(root)) for p in root.rglob("*.aedat")} == expected
    assert (root / "truck" / "cifar10_truck_1.aedat").read_bytes().startswith(b"#!AER-DAT2.0\r\n")


def test_deterministic_given_seed(tmp_path):
    a = write_dvs_gesture(tmp_path / "a", users=(2,), lightings=("led",), seed=4, events_per_sample=500)
    b = write_dvs_gesture(tmp_path / "b", users=(2,), lightings=("led",), seed=4, events_per_sample=500)
    c = write_dvs_gesture(tmp_path / "c", users=(2,), lightings=("led",), seed=5, events_per_sample=500)
    file = "DvsGesture/user02_led.aedat"
    assert (a / file).read_bytes() == (b / file).read_bytes() != (c / file).read_bytes()
    x = write_cifar10_dvs(tmp_path / "x", ids=[3], seed=1, events_per_sample=500)
    y = write_cifar10_dvs(tmp_path / "y", ids=[3], seed=1, events_per_sample=500)
    assert (x / "dog/cifar10_dog_3.aedat").read_bytes() == (y / "dog/cifar10_dog_3.aedat").read_bytes()


def test_events_look_like_a_dvs(tmp_path):
    root = write_cifar10_dvs(tmp_path, ids=[0], events_per_sample=4000, noise=0.0)
    events = read_aedat2(root / "frog" / "cifar10_frog_0.aedat")
    assert 3000 < len(events) < 5000  # 4000 +- 20%, less the few jittered off the sensor
    assert np.all(np.diff(events["t"]) >= 0)
    assert 0.3 < events["p"].mean() < 0.7  # leading edges ON, trailing edges OFF
    noisy = read_aedat2(write_cifar10_dvs(tmp_path / "noisy", ids=[0], events_per_sample=4000)
                        / "frog" / "cifar10_frog_0.aedat")
    assert 1.8 < len(noisy) / len(events) < 2.2  # the default background: noise = 1.0


def occupied_fraction(frames: np.ndarray) -> float:
    """Fraction of 4x4 blocks of the time-summed ``frames [T, 2, 128, 128]`` with >= 1 event."""
    counts = np.asarray(frames).sum(0).reshape(2, 32, 4, 32, 4).sum((2, 4))
    return float((counts > 0).mean())


def test_background_is_never_silent(tmp_path):
    """The default release has background activity everywhere; noise = 0 leaves most blocks empty.

    An exactly-zero background is what a QAT net can hide under the rounding dead zone of one L
    (tests/test_demo_health.py); a real sensor always has leak and shot-noise events.
    """
    kw = dict(users=(24,), lightings=("led",))
    busy = DVSGesture(write_dvs_gesture(tmp_path / "a", **kw), train=False, frames_number=4, num_workers=0)
    quiet = DVSGesture(write_dvs_gesture(tmp_path / "b", noise=0.0, **kw), train=False, frames_number=4,
                       num_workers=0)
    assert len(busy) == len(quiet) == 11
    busy_fraction = [occupied_fraction(frames) for frames, _ in busy]
    quiet_fraction = [occupied_fraction(frames) for frames, _ in quiet]
    assert min(busy_fraction) > 0.8, busy_fraction
    assert max(quiet_fraction) < 0.3, quiet_fraction


@pytest.mark.parametrize("kw, error, match", [
    (dict(noise=-0.5), ValueError, "noise must be a finite number >= 0"),
    (dict(noise=float("nan")), ValueError, "noise must be a finite number >= 0"),
    (dict(events_per_sample=0), ValueError, "events_per_sample must be an int >= 1"),
    (dict(events_per_sample=10.5), TypeError, "events_per_sample must be an int >= 1"),
    (dict(duration_us=0), ValueError, "duration_us must be an int >= 1"),
])
def test_bad_rates_are_refused_before_writing(tmp_path, kw, error, match):
    for write in (write_dvs_gesture, write_cifar10_dvs):
        with pytest.raises(error, match=match):
            write(tmp_path / write.__name__, **kw)
        assert not (tmp_path / write.__name__).exists()


def pooled(dataset):
    """[N, T*2, 32, 32] log counts: 128x128 frames summed over 4x4 blocks."""
    x = torch.stack([frames for frames, _ in dataset])
    x = x.reshape(len(dataset), -1, 32, 4, 32, 4).sum(dim=(3, 5))
    return torch.log1p(x), torch.tensor([label for _, label in dataset])


#: Label -> class as the time-averaged picture sees it: each arm's clockwise and counter-clockwise
#: circle (labels 3/4, 5/6) leave the same ring, so what a few epochs on 12 recordings per class
#: learn is scored with each pair as one class (the test of the arm circles below checks that the
#: order still tells them apart).
ONE_CLASS_PER_ARM = torch.arange(11)
for _cw, _ccw in DVS_GESTURE.order_pairs:
    ONE_CLASS_PER_ARM[_ccw] = _cw


def small_cnn_accuracy(train, test, classes, epochs=15, merge=None):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(train[0].shape[1], 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(256, classes),
    )
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    x, y = train
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(16):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            optimizer.step()
    with torch.no_grad():
        pred, y = net(test[0]).argmax(1), test[1]
    if merge is not None:
        pred, y = merge[pred], merge[y]
    return (pred == y).float().mean().item()


@pytest.mark.slow
def test_gesture_release_is_learnable(tmp_path):
    root = write_dvs_gesture(tmp_path)  # the writer's default release: 132 train, 66 test samples
    train = DVSGesture(root, train=True, frames_number=4, num_workers=0)
    test = DVSGesture(root, train=False, frames_number=4, num_workers=0)
    assert (len(train), len(test)) == (132, 66)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        accuracy = small_cnn_accuracy(pooled(train), pooled(test), 11, merge=ONE_CLASS_PER_ARM)
    finally:
        torch.set_num_threads(threads)
    assert accuracy >= 0.9, accuracy


def _turning(frames: np.ndarray, right: bool) -> float:
    """The mean angle (radians, + = clockwise on the sensor) an arm's event centroid turns from
    one frame to the next, about the centre of its time-summed ring; ``frames [T, 2, 128, 128]``."""
    f = np.asarray(frames, dtype=np.float64).sum(1)[:, :, 64:] if right else \
        np.asarray(frames, dtype=np.float64).sum(1)[:, :, :64]
    f = np.clip(f - np.median(f, axis=(1, 2), keepdims=True), 0, None)  # the background out
    ys, xs = np.mgrid[0:128, 0:64]
    total = f.sum(0)
    cy, cx = (total * ys).sum() / total.sum(), (total * xs).sum() / total.sum()
    w = f.sum((1, 2))
    angle = np.arctan2((f * ys).sum((1, 2)) / w - cy, (f * xs).sum((1, 2)) / w - cx)
    step = np.angle(np.exp(1j * np.diff(angle)))  # wrapped to (-pi, pi]
    return float(step.mean())


def test_arm_circles_differ_in_order_not_in_the_mean_frame(tmp_path):
    """As in the real release, a clockwise and a counter-clockwise circle of the same arm leave
    the same time-summed picture (closer than two different arms), but their frames in order turn
    opposite ways, in every recording."""
    root = write_dvs_gesture(tmp_path, users=(24,), lightings=("led", "lab", "natural"))
    ds = DVSGesture(root, train=False, frames_number=8, num_workers=0)
    by_label = {}
    for frames, label in ds:
        by_label.setdefault(int(label), []).append(np.asarray(frames, dtype=np.float64))
    mean = lambda f: f.mean(0).reshape(2, 32, 4, 32, 4).sum((2, 4))
    for k in range(3):  # each lighting: the same user, the same arm, both directions
        cw, ccw, other = (mean(by_label[label][k]) for label in (3, 4, 5))
        assert np.linalg.norm(cw - ccw) < np.linalg.norm(cw - other)
    for label, right, sign in ((3, True, 1), (4, True, -1), (5, False, 1), (6, False, -1)):
        turns = [_turning(f, right) for f in by_label[label]]
        assert all(sign * t > 0.5 for t in turns), (label, turns)
