"""Bad arguments raise at construction, naming the argument and what it may be; no silent results."""

import tracemalloc

import numpy as np
import pytest

from sj_qvm.datasets import CIFAR10DVS, DVSGesture, events_to_frames
from sj_qvm.datasets.aedat import EVENT_DTYPE
from sj_qvm.datasets.dvs_gesture import read_labels_csv
from sj_qvm.datasets.frames import MAX_FRAMES_BYTES, events_to_frames_ref
from sj_qvm.datasets.synthetic import write_cifar10_dvs, write_dvs_gesture


@pytest.fixture(scope="module")
def gesture(tmp_path_factory):
    return write_dvs_gesture(tmp_path_factory.mktemp("gesture"), users=(1, 24), lightings=("led",), events_per_sample=200)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return write_cifar10_dvs(tmp_path_factory.mktemp("cifar"), ids=range(2), events_per_sample=200)


@pytest.mark.parametrize("train", [None, "test", "train", 0, 1, 1.0])
def test_train_must_be_a_bool(gesture, cifar, train):
    message = r"train must be True or False, got "
    with pytest.raises(TypeError, match=message):
        DVSGesture(gesture, train=train)
    with pytest.raises(TypeError, match=message):
        CIFAR10DVS(cifar, train=train)


def test_train_selects_the_split(gesture):
    train = DVSGesture(gesture, train=True, num_workers=0)
    test = DVSGesture(gesture, train=np.bool_(False), num_workers=0)
    assert {s.trial for s in train.samples} == {"user01_led"} and {s.trial for s in test.samples} == {"user24_led"}


@pytest.mark.parametrize("num_workers, error", [(-1, ValueError), ("2", TypeError), (2.0, TypeError), (True, TypeError)])
def test_num_workers(gesture, cifar, tmp_path, num_workers, error):
    match = r"num_workers must be an int >= 0, got "
    with pytest.raises(error, match=match):
        DVSGesture(gesture, frames_number=2, cache_dir=tmp_path, num_workers=num_workers)
    with pytest.raises(error, match=match):
        CIFAR10DVS(cifar, frames_number=2, cache_dir=tmp_path, num_workers=num_workers)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # refused before any work


@pytest.mark.parametrize("seed, error", [("a", TypeError), (1.5, TypeError), (True, TypeError), (-1, ValueError), (2**32, ValueError)])
def test_cifar_seed(cifar, seed, error):
    with pytest.raises(error, match=r"seed must be an int >= 0 and <= 4294967295, got "):
        CIFAR10DVS(cifar, split="random", seed=seed)
    with pytest.raises(error, match="seed must be"):
        CIFAR10DVS(cifar, split="first900", seed=seed)
    assert len(CIFAR10DVS(cifar, split="random", seed=np.int64(2**32 - 1))) == 20


@pytest.mark.parametrize("split_by", ["x", "", None, ("number",)])
def test_split_by_is_checked_without_frames(gesture, cifar, split_by):
    for make in (lambda: DVSGesture(gesture, split_by=split_by), lambda: CIFAR10DVS(cifar, split_by=split_by)):
        with pytest.raises(ValueError, match=r"split_by must be one of \('number', 'time'\), got "):
            make()


def test_transforms_must_be_callable(gesture):
    with pytest.raises(TypeError, match="transform must be None or a callable, got 'flip'"):
        DVSGesture(gesture, transform="flip")
    with pytest.raises(TypeError, match="target_transform must be None or a callable, got 3"):
        DVSGesture(gesture, target_transform=3)


def events(n=10):
    out = np.zeros(n, dtype=EVENT_DTYPE)
    out["t"] = np.arange(n) * 10
    out["x"] = np.arange(n) % 4
    out["y"] = np.arange(n) % 3
    out["p"] = np.arange(n) % 2
    return out


@pytest.mark.parametrize("sensor_size", [(True, True, 2), (np.True_, 4, 2), (128,), (4, 4, 2, 1), (0, 4, 2),
                                         (4.0, 4, 2), "abc", 128, None])
def test_sensor_size(sensor_size):
    for integrate in (events_to_frames, events_to_frames_ref):
        with pytest.raises(ValueError, match=r"sensor_size must be \(W, H, P\) = \(width, height, polarities\) "
                                             r"with integers >= 1, got "):
            integrate(events(), 2, "number", sensor_size)
    assert events_to_frames(events(), 2, "number", (4, np.int64(3), 2)).sum() == 10


@pytest.mark.parametrize("polarities", [1, 3])
def test_sensor_size_needs_two_polarities(polarities):
    with pytest.raises(ValueError, match=r"sensor_size must have P = 2 polarities"):
        events_to_frames(events(), 2, "number", (4, 3, polarities))


@pytest.mark.parametrize("csv_body, line, match", [
    ("1,0,10\n2,1.5,20\n", 3, "must be three integers"),
    ("1,0,10\n2,1e3,2000\n", 3, "must be three integers"),
    ("1,-5,10\n", 2, "must be three integers"),
    ("\uff11,0,10\n", 2, "must be three integers"),  # a fullwidth digit: int() would take it
    ("\u00b2,0,10\n", 2, "must be three integers"),  # a superscript: isdigit() but not int()
    ("1,1_000,2000\n", 2, "must be three integers"),
    ("1,0,99999999999999999999\n", 2, r"must be three integers in 0\.\.2\*\*63-1"),
])
def test_labels_csv_non_integer_fields(tmp_path, csv_body, line, match):
    path = tmp_path / "user01_led_labels.csv"
    path.write_text("class,startTime_usec,endTime_usec\n" + csv_body, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}: line {line} {match}"):
        read_labels_csv(path)


def test_labels_csv_non_utf8_byte(tmp_path):
    path = tmp_path / "user01_led_labels.csv"
    path.write_bytes(b"class,startTime_usec,endTime_usec\r\n1,0,10\r\n2,2\xe90,30\r\n")
    with pytest.raises(ValueError, match=rf"{path}: line 3 is not UTF-8 text \(byte 0xe9 at column 4\)"):
        read_labels_csv(path)
    path.write_bytes(b"class,startTime_usec,endTime_usec\r\n1,0,10\r\n2,20,30\r\n")
    assert read_labels_csv(path) == [(0, 0, 10), (1, 20, 30)]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("split_by", ["number", "time"])
def test_non_finite_timestamps(bad, split_by):
    columns = {k: events()[k] for k in "txyp"}
    columns["t"] = columns["t"].astype(np.float64)
    columns["t"][4] = bad
    with pytest.raises(ValueError, match=r"events\['t'\] holds NaN or infinite timestamps"):
        events_to_frames(columns, 3, split_by, (4, 3, 2))


@pytest.mark.parametrize("field", ["x", "y", "p"])
@pytest.mark.parametrize("value, dtype", [(3.7, np.float64), (np.nan, np.float64), (np.inf, np.float32), (0.5, np.float16)])
def test_float_coordinates_are_not_truncated(field, value, dtype):
    columns = {k: events()[k] for k in "txyp"}
    columns[field] = columns[field].astype(dtype)
    columns[field][2] = value
    for integrate in (events_to_frames, events_to_frames_ref):
        with pytest.raises(ValueError, match=rf"events\['{field}'\] must hold integers, got the {np.dtype(dtype)} value"):
            integrate(columns, 2, "number", (8, 8, 2))
    columns[field][2] = 1.0  # integral floats count as those integers
    expected = {k: events()[k] for k in "txyp"}
    expected[field] = expected[field].copy()
    expected[field][2] = 1
    assert np.array_equal(events_to_frames(columns, 2, "number", (8, 8, 2)), events_to_frames(expected, 2, "number", (8, 8, 2)))


@pytest.mark.parametrize("field", ["t", "x", "y", "p"])
def test_complex_and_object_columns(field):
    for dtype in (np.complex128, object, "U3"):
        columns = {k: events()[k] for k in "txyp"}
        columns[field] = columns[field].astype(dtype)
        with pytest.raises(ValueError, match=rf"events\['{field}'\] must (hold integers|be integer or float), got dtype"):
            events_to_frames(columns, 2, "number", (8, 8, 2))


@pytest.mark.parametrize("missing", ["t", "x", "y", "p"])
def test_missing_field_names_it_and_the_expected_fields(missing):
    as_mapping = {k: events()[k] for k in "txyp" if k != missing}
    as_array = np.zeros(3, dtype=[(k, "<i8") for k in "txyp" if k != missing])
    for given in (as_mapping, as_array):
        with pytest.raises(ValueError, match=rf"events has no field '{missing}': expected .*\('t', 'x', 'y', 'p'\)"):
            events_to_frames(given, 2, "number", (8, 8, 2))


def test_plain_array_is_not_events():
    with pytest.raises(ValueError, match=r"events has no field 't': expected a structured array or a mapping"):
        events_to_frames(np.zeros((3, 4)), 2, "number", (8, 8, 2))


@pytest.mark.parametrize("frames_number, sensor_size, gib", [(10**6, (128, 128, 2), "122.1"), (4, (32768, 32768, 2), "32.0")])
def test_huge_outputs_are_refused_up_front(gesture, frames_number, sensor_size, gib):
    assert frames_number * 2 * sensor_size[0] * sensor_size[1] * 4 > MAX_FRAMES_BYTES
    tracemalloc.start()
    with pytest.raises(ValueError, match=rf"frames_number={frames_number} with sensor_size \(W, H, P\) = \({sensor_size[0]}, "
                                         rf"{sensor_size[1]}, 2\) needs .* {gib} GiB; the limit is MAX_FRAMES_BYTES = 16 GiB"):
        events_to_frames(events(), frames_number, "time", sensor_size)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20  # refused before allocating, not after trying
    if sensor_size == DVSGesture.sensor_size:
        with pytest.raises(ValueError, match="122.1 GiB"):
            DVSGesture(gesture, frames_number=frames_number)
