"""events_to_frames: equality with SpikingJelly's integrator, empty windows, empty input, invariants."""


import numpy as np
import pytest

import sj_reference
from sj_qvm.datasets import events_to_frames, read_aedat2
from sj_qvm.datasets.aedat import EVENT_DTYPE
from sj_qvm.datasets.frames import FRAME_DTYPE, events_to_frames_ref


def sj_integrate(events, split_by, frames_number, height, width):
    integrate_events_by_fixed_frames_number = sj_reference.require(
        "integrate_events_by_fixed_frames_number")
    columns = {key: np.asarray(events[key]) for key in "txyp"}
    return integrate_events_by_fixed_frames_number(columns, split_by, frames_number, height, width)


def make_events(rng, n, height, width, t_span, sort):
    events = np.zeros(n, dtype=EVENT_DTYPE)
    events["t"] = rng.integers(0, t_span, n)
    if sort:
        events["t"].sort()
    events["x"] = rng.integers(0, width, n)
    events["y"] = rng.integers(0, height, n)
    events["p"] = rng.integers(0, 2, n)
    return events


def test_equal_to_sj_wherever_sj_returns():
    rng = np.random.default_rng(0)
    compared = crashed = 0
    for _ in range(600):
        n = int(rng.integers(0, 50))
        frames_number = int(rng.integers(1, 9))
        height, width = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        sort = bool(rng.random() < 0.7)
        events = make_events(rng, n, height, width, int(rng.choice([3, 20, 10_000])), sort)
        for split_by in ("number", "time"):
            ours = events_to_frames(events, frames_number, split_by, (width, height, 2))
            assert ours.shape == (frames_number, 2, height, width) and ours.dtype == FRAME_DTYPE
            assert np.array_equal(ours, events_to_frames_ref(events, frames_number, split_by, (width, height, 2)))
            if sort or split_by == "number":
                assert ours.sum() == n
            try:
                reference = sj_integrate(events, split_by, frames_number, height, width)
            except IndexError:  # SpikingJelly's empty-window crash
                crashed += 1
                continue
            assert np.array_equal(ours, reference)
            compared += 1
    assert compared > 400 and crashed > 100, (compared, crashed)


@pytest.mark.parametrize("split_by", ["number", "time"])
@pytest.mark.parametrize("frames_number", [1, 4, 16])
def test_equal_to_sj_on_large_input(split_by, frames_number):
    events = make_events(np.random.default_rng(1), 200_000, 128, 128, 6_000_000, sort=True)
    ours = events_to_frames(events, frames_number, split_by)
    assert np.array_equal(ours, sj_integrate(events, split_by, frames_number, 128, 128))
    assert ours.sum() == len(events)


@pytest.mark.parametrize("split_by", ["number", "time"])
def test_equal_to_sj_on_real_recording(real_recording, split_by):
    events = read_aedat2(real_recording("dvs128_aedat2_neal_walking.aedat"))
    for frames_number in (4, 10):
        ours = events_to_frames(events, frames_number, split_by)
        assert np.array_equal(ours, sj_integrate(events, split_by, frames_number, 128, 128))
        assert ours.sum() == len(events)


def test_empty_time_windows_give_zero_frames():
    # Two bursts with a silent gap: SpikingJelly raises IndexError on windows 1 and 2.
    events = np.zeros(6, dtype=EVENT_DTYPE)
    events["t"] = [0, 1, 2, 97, 98, 100]
    events["x"] = [0, 1, 2, 3, 3, 3]
    with pytest.raises(IndexError):
        sj_integrate(events, "time", 4, 4, 4)
    frames = events_to_frames(events, 4, "time", (4, 4, 2))
    assert frames[1].sum() == 0 and frames[2].sum() == 0
    assert frames[0, 0, 0, :3].tolist() == [1, 1, 1] and frames[0].sum() == 3
    assert frames[3, 0, 0, 3] == 3 and frames.sum() == 6


def test_events_after_an_empty_last_window_are_kept():
    # dt = 100 // 3 = 33: window 2 is [66, 99), empty, and t = 100 lies past every window.
    events = np.zeros(3, dtype=EVENT_DTYPE)
    events["t"] = [0, 40, 100]
    events["x"] = [0, 1, 2]
    frames = events_to_frames(events, 3, "time", (3, 1, 2))  # W = 3, H = 1
    assert frames[:, 0, 0].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


@pytest.mark.parametrize("split_by", ["number", "time"])
def test_empty_input_gives_zero_frames_of_the_same_shape(split_by):
    frames = events_to_frames(np.zeros(0, dtype=EVENT_DTYPE), 4, split_by, (128, 128, 2))
    assert frames.shape == (4, 2, 128, 128) and frames.dtype == FRAME_DTYPE
    assert not frames.any()


def test_single_event():
    events = np.zeros(1, dtype=EVENT_DTYPE)
    events[0] = (5, 7, 3, 1)
    expected = np.zeros((4, 2, 8, 8), dtype=FRAME_DTYPE)
    expected[3, 1, 3, 7] = 1  # N // T = 0: the last segment holds everything
    for split_by in ("number", "time"):
        assert np.array_equal(events_to_frames(events, 4, split_by, (8, 8, 2)), expected)
    assert np.array_equal(sj_integrate(events, "number", 4, 8, 8), expected)
    with pytest.raises(IndexError):  # t[-1] - t[0] = 0 < T: every SJ window is empty
        sj_integrate(events, "time", 4, 8, 8)


def test_polarity_channel_and_coordinates():
    events = np.zeros(3, dtype=EVENT_DTYPE)
    events["x"], events["y"], events["p"] = [4, 0, 4], [1, 2, 1], [1, 0, 1]
    frames = events_to_frames(events, 1, "number", (5, 3, 2))  # W = 5, H = 3
    assert frames[0, 1, 1, 4] == 2 and frames[0, 0, 2, 0] == 1 and frames.sum() == 3


def test_accepts_column_mapping_and_does_not_mutate():
    events = make_events(np.random.default_rng(2), 1000, 16, 16, 5000, sort=True)
    before = events.copy()
    columns = {key: events[key].copy() for key in "txyp"}
    assert np.array_equal(
        events_to_frames(events, 5, "time", (16, 16, 2)), events_to_frames(columns, 5, "time", (16, 16, 2))
    )
    assert np.array_equal(events, before)


@pytest.mark.parametrize("frames_number, error", [(0, ValueError), (-1, ValueError), (2.5, TypeError),
                                                  (True, TypeError), ("4", TypeError)])
def test_rejects_bad_frames_number(frames_number, error):
    with pytest.raises(error, match="frames_number must be an int >= 1, got "):
        events_to_frames(np.zeros(0, dtype=EVENT_DTYPE), frames_number)


def test_sensor_size_is_width_height_polarities():
    # A 5-wide, 3-high sensor: frames are [T, 2, H, W] and x runs along the last axis.
    events = np.zeros(2, dtype=EVENT_DTYPE)
    events["x"], events["y"], events["p"] = [4, 0], [2, 0], [0, 1]
    frames = events_to_frames(events, 1, "number", (5, 3, 2))
    assert frames.shape == (1, 2, 3, 5) and frames[0, 0, 2, 4] == 1 and frames[0, 1, 0, 0] == 1
    assert frames.sum() == len(events)
    with pytest.raises(ValueError, match=r"x in \[0, 4\].*outside sensor_size \(W, H, P\) = \(3, 5, 2\)"):
        events_to_frames(events, 1, "number", (3, 5, 2))  # width and height swapped: x = 4 is off it


@pytest.mark.parametrize("pair", [(128, 128), (3, 5), [4, 4]])
def test_a_height_width_pair_is_refused_by_name(pair):
    events = np.zeros(1, dtype=EVENT_DTYPE)
    for integrate in (events_to_frames, events_to_frames_ref):
        with pytest.raises(ValueError, match=r"sensor_size must be \(W, H, P\) = \(width, height, "
                                             r"polarities\).*got the pair .*give \(width, height, 2\)"):
            integrate(events, 1, "number", pair)


def test_rejects_bad_split_by():
    with pytest.raises(ValueError, match=r"split_by must be one of \('number', 'time'\), got 'duration'"):
        events_to_frames(np.zeros(0, dtype=EVENT_DTYPE), 4, "duration")


def test_rejects_events_outside_the_sensor():
    events = np.zeros(1, dtype=EVENT_DTYPE)
    events["x"] = 128
    with pytest.raises(ValueError, match=r"x in \[128, 128\].*\(W, H, P\) = \(128, 128, 2\)"):
        events_to_frames(events, 1)

