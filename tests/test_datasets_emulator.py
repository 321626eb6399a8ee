"""The DVS emulator: pixel physics, determinism, the fast pixel model against its twin, bad input."""
import numpy as np
import pytest

from sj_qvm.datasets import DVS128_SENSOR_SIZE, EVENT_DTYPE, DVSSettings, emulate_dvs
from sj_qvm.datasets._dvs_pixel import PixelState, crossings, crossings_ref, enforce_refractory

QUIET = dict(leak_rate_hz=0.0, shot_noise_rate_hz=0.0, jitter_us=0.0)
FAST = dict(duration_us=200_000, time_step_us=10_000)  # 20 sub-steps: a few ms per emulation


def _image(seed=0, size=16):
    """A smooth random picture in [0, 1] (a blurred noise field)."""
    rng = np.random.default_rng(seed)
    x = rng.random((size, size))
    for _ in range(2):
        x = (x + np.roll(x, 1, 0) + np.roll(x, 1, 1) + np.roll(x, (1, 1), (0, 1))) / 4
    return (x - x.min()) / (x.max() - x.min())


def _bar():
    image = np.zeros((32, 32))
    image[:, 12:20] = 1.0  # a bright vertical bar, centred
    return image


def _pixel_intervals(events):
    """Per pixel, the times between consecutive events."""
    order = np.lexsort((events["t"], events["y"], events["x"]))
    e = events[order]
    same = (e["x"][1:] == e["x"][:-1]) & (e["y"][1:] == e["y"][:-1])
    return np.diff(e["t"])[same]


def test_events_are_sorted_and_inside_the_sensor_and_duration():
    events = emulate_dvs(_image(), **FAST)
    assert events.dtype == EVENT_DTYPE and len(events) > 1000
    assert np.all(np.diff(events["t"]) >= 0)
    assert events["t"].min() >= 0 and events["t"].max() < FAST["duration_us"]
    width, height = DVS128_SENSOR_SIZE[:2]
    assert events["x"].min() >= 0 and events["x"].max() < width
    assert events["y"].min() >= 0 and events["y"].max() < height
    assert set(np.unique(events["p"])) == {0, 1}


def test_static_image_gives_only_noise():
    assert len(emulate_dvs(_image(), amplitude_px=0.0, **FAST, **QUIET)) == 0
    # With shot noise only, the count is Poisson(rate * pixels * duration), wherever the edges are.
    rate, duration = 20.0, 500_000
    events = emulate_dvs(_image(), amplitude_px=0.0, duration_us=duration, time_step_us=10_000,
                         leak_rate_hz=0.0, shot_noise_rate_hz=rate, jitter_us=0.0)
    mean = rate * 128 * 128 * duration * 1e-6
    assert abs(len(events) - mean) < 5 * np.sqrt(mean) + 0.01 * mean  # a few are refractory
    # Leak events alone are all ON: the reference drifts down, never up.
    leak = emulate_dvs(_image(), amplitude_px=0.0, duration_us=duration, time_step_us=10_000,
                       leak_rate_hz=5.0, shot_noise_rate_hz=0.0, jitter_us=0.0)
    assert len(leak) > 1000 and np.all(leak["p"] == 1)


def test_blank_image_moving_gives_only_noise():
    """The converse of the signal: a uniform screen on a surround of its own brightness has no
    edge, so moving it changes nothing."""
    blank = np.full((8, 8), 0.5)
    assert len(emulate_dvs(blank, background=0.5, **FAST, **QUIET)) == 0
    assert len(emulate_dvs(blank, background=0.0, **FAST, **QUIET)) > 0  # the screen's border


def test_polarity_follows_the_brightness_change():
    """A bright bar moving right, then back: ON on its leading edge, OFF on its trailing one."""
    duration = 400_000
    events = emulate_dvs(_bar(), duration_us=duration, time_step_us=5_000, directions=1,
                         amplitude_px=6.0, **QUIET)
    out = events[events["t"] < duration // 2]   # moving right
    back = events[events["t"] >= duration // 2]  # moving left
    centre = 63.5
    for part, leading_on in ((out, True), (back, False)):
        right, left = part["x"] > centre, part["x"] < centre
        assert right.sum() > 100 and left.sum() > 100
        on_right = part["p"][right].mean()
        on_left = part["p"][left].mean()
        if leading_on:
            assert on_right > 0.99 and on_left < 0.01
        else:
            assert on_right < 0.01 and on_left > 0.99


def test_doubling_the_threshold_halves_the_events():
    """Events count the threshold crossings of each pixel's log intensity: without mismatch,
    refractory period or noise, twice the threshold gives about half as many. A pixel whose log
    intensity changes by D gives about floor(D / C) events, so the ratio is a little above 2,
    and closer to 2 the larger D / C: the bar's edges change the log intensity by 4.6."""
    kw = dict(threshold_sigma=0.0, refractory_us=0, **FAST, **QUIET)
    low, high = (len(emulate_dvs(_bar(), threshold_on=c, threshold_off=c, **kw)) for c in (0.2, 0.4))
    assert 1.9 < low / high < 2.25, low / high


def test_refractory_period_is_respected_per_pixel():
    refractory = 20_000
    kw = dict(shot_noise_rate_hz=50.0, leak_rate_hz=1.0, jitter_us=0.0, threshold_on=0.05,
              threshold_off=0.05, **FAST)
    events = emulate_dvs(_image(), refractory_us=refractory, **kw)
    assert len(events) > 1000 and _pixel_intervals(events).min() >= refractory
    # The converse: without it the same pixels fire faster, so the check above bites.
    assert _pixel_intervals(emulate_dvs(_image(), refractory_us=0, **kw)).min() < refractory


def test_same_seed_same_events_other_seed_other_events():
    a, b = emulate_dvs(_image(), seed=3, **FAST), emulate_dvs(_image(), seed=3, **FAST)
    assert np.array_equal(a, b)
    c = emulate_dvs(_image(), seed=4, **FAST)
    assert len(a) != len(c) or not np.array_equal(a, c)
    assert np.array_equal(emulate_dvs(_image(), seed=(1, 2), **FAST), emulate_dvs(_image(), seed=(1, 2), **FAST))


def test_uint8_and_float_images_agree():
    image = np.round(_image() * 255).astype(np.uint8)
    assert np.array_equal(emulate_dvs(image, **FAST), emulate_dvs(image / 255.0, **FAST))
    # float32 rounds the levels a little differently: nearly, not exactly, the same events
    single = emulate_dvs((image / 255.0).astype(np.float32), **FAST)
    assert abs(len(single) - len(emulate_dvs(image, **FAST))) < 0.01 * len(single)


@pytest.mark.parametrize("refractory", [0.0, 700.0, 5_000.0])
def test_fast_pixel_model_equals_its_twin(refractory):
    rng = np.random.default_rng(1)
    pixels, steps = 37, 25
    log_i = np.cumsum(rng.normal(0, 0.3, (steps + 1, pixels)), axis=0)
    times = np.r_[0.0, np.sort(rng.uniform(0, 100_000, steps))]
    c_on, c_off = rng.uniform(0.1, 0.3, pixels), rng.uniform(0.1, 0.3, pixels)
    ref = log_i[0] - c_on + (c_on + c_off) * rng.uniform(0.01, 0.99, pixels)
    state = PixelState(ref, np.full(pixels, -np.inf), log_i[0].copy(), 0.0)
    fast_state, ref_state = state.copy(), state.copy()
    # Two calls, so the state carried between chunks is checked too.
    out = [crossings(fast_state, log_i[1:13], times[1:13], c_on, c_off, refractory, 10**6),
           crossings(fast_state, log_i[13:], times[13:], c_on, c_off, refractory, 10**6)]
    twin = [crossings_ref(ref_state, log_i[1:13], times[1:13], c_on, c_off, refractory, 10**6),
            crossings_ref(ref_state, log_i[13:], times[13:], c_on, c_off, refractory, 10**6)]
    a, t = (np.concatenate(p) for p in zip(*out))
    a2, t2 = (np.concatenate(p) for p in zip(*twin))
    assert len(a) > 300
    o, o2 = np.lexsort((t, a)), np.lexsort((t2, a2))
    assert np.array_equal(a[o], a2[o2])
    np.testing.assert_allclose(t[o], t2[o2], rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast_state.reference, ref_state.reference, atol=1e-9)
    np.testing.assert_allclose(fast_state.last_event_us, ref_state.last_event_us, atol=1e-6)
    if refractory:
        pixel = a >> 1
        gaps = [np.diff(np.sort(t[pixel == q])) for q in np.unique(pixel)]
        assert min(g.min() for g in gaps if g.size) > refractory


def test_enforce_refractory_keeps_the_first_and_then_every_event_far_enough():
    pixel = np.array([0, 0, 0, 0, 1, 1])
    t = np.array([0, 5, 12, 14, 3, 4])
    kept = enforce_refractory(pixel, t, 10)
    assert [(int(pixel[i]), int(t[i])) for i in kept] == [(0, 0), (0, 12), (1, 3)]


def test_too_many_events_are_refused_before_they_are_made():
    with pytest.raises(ValueError, match="max_events = 100"):
        emulate_dvs(_image(), max_events=100, **FAST)


@pytest.mark.parametrize("image, error, match", [
    (np.zeros((8, 8), np.int64), TypeError, "image must be a uint8 array"),
    (np.zeros((8, 8), bool), TypeError, "image must be a uint8 array"),
    (np.zeros((8, 8), complex), TypeError, "image must be a uint8 array"),
    (np.full((8, 8), np.nan), ValueError, r"image must be finite, got 64 NaN"),
    (np.full((8, 8), -0.1), ValueError, r"image must lie in \[0, 1\]"),
    (np.full((8, 8), 1.5), ValueError, r"image must lie in \[0, 1\]"),
    (np.zeros((0, 8)), ValueError, "image must not be empty"),
    (np.zeros((8, 8, 3)), ValueError, r"image must be 2-D \[H, W\]"),
    (np.zeros(8), ValueError, r"image must be 2-D \[H, W\]"),
])
def test_bad_images_are_refused(image, error, match):
    with pytest.raises(error, match=match):
        emulate_dvs(image)


@pytest.mark.parametrize("setting, value, error", [
    ("duration_us", 0, ValueError), ("duration_us", 1.5e6, TypeError),
    ("time_step_us", 5, ValueError), ("screen_px", 129, ValueError),
    ("amplitude_px", float("nan"), ValueError), ("amplitude_px", -1.0, ValueError),
    ("directions", 0, ValueError), ("threshold_on", 0.0, ValueError),
    ("threshold_off", "0.2", TypeError), ("threshold_sigma", -0.1, ValueError),
    ("refractory_us", -1, ValueError), ("leak_rate_hz", float("inf"), ValueError),
    ("shot_noise_rate_hz", -1.0, ValueError), ("jitter_us", True, TypeError),
    ("black_level", 0.0, ValueError), ("gamma", 0.0, ValueError), ("background", 2.0, ValueError),
    ("max_events", 0, ValueError),
])
def test_bad_settings_name_the_setting(setting, value, error):
    with pytest.raises(error, match=rf"^{setting} must be "):
        DVSSettings(**{setting: value})
    with pytest.raises(error, match=rf"^{setting} must be "):
        emulate_dvs(_image(), **{setting: value})


def test_memory_sizes_are_bounded_up_front():
    with pytest.raises(ValueError, match=r"duration_us / time_step_us must be <= 100000"):
        DVSSettings(duration_us=60_000_000, time_step_us=10)
    with pytest.raises(ValueError, match="time_step_us must be <= duration_us"):
        DVSSettings(duration_us=10_000, time_step_us=20_000)
    with pytest.raises(TypeError, match="unexpected keyword argument 'threshold'"):
        emulate_dvs(_image(), threshold=0.2)
    with pytest.raises(TypeError, match="seed must be an int >= 0"):
        emulate_dvs(_image(), seed=-1)
