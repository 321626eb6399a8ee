"""The C event counter behind events_to_frames: equal to the numpy path and the reference twin on
every layout it reads, thread-count independent, proven to run, and strict about bad input."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from sj_qvm.datasets import events_to_frames
from sj_qvm.datasets import frames as frames_module
from sj_qvm.datasets.aedat import EVENT_DTYPE
from sj_qvm.datasets.frames import events_to_frames_ref
from test_datasets_frames import make_events

native = pytest.mark.skipif(not frames_module.NATIVE, reason="sj_qvm.datasets._count was not built")


def random_events(rng, n, height, width, sort=True):
    return make_events(rng, n, height, width, t_span=10 * n + 1, sort=sort)


@pytest.fixture
def calls(monkeypatch):
    """Counts calls into the C extension, so a silent fallback to numpy cannot pass."""
    seen = []
    original = frames_module._native.count

    def counting(*args):
        seen.append(args[-1])  # the thread count
        return original(*args)

    monkeypatch.setattr(frames_module._native, "count", counting)
    return seen


def numpy_path(monkeypatch, *args, **kwargs):
    with monkeypatch.context() as patch:
        patch.setattr(frames_module, "_native", None)
        return events_to_frames(*args, **kwargs)


# Layouts the counter reads in place: (x/y dtype, p dtype, how the columns are held).
LAYOUTS = [
    ("<i2", "u1", "structured"),  # EVENT_DTYPE
    ("<u2", "?", "structured"),
    ("<i2", "?", "tonic"),  # tonic's field order: x, y, t, p
    ("<i8", "<i8", "columns"),  # SpikingJelly's own dict of int64 columns
    ("<i4", "i1", "columns"),
    ("u1", "<u2", "columns"),
    ("<u8", "<u4", "reversed"),  # negative strides
]


def layout(events, coordinate, polarity, how):
    if how in ("structured", "tonic"):
        names = ["t", "x", "y", "p"] if how == "structured" else ["x", "y", "t", "p"]
        formats = {"t": "<i8", "x": coordinate, "y": coordinate, "p": polarity}
        out = np.zeros(len(events), dtype=[(k, formats[k]) for k in names])
        for k in "txyp":
            out[k] = events[k]
        return out
    columns = {k: np.ascontiguousarray(events[k]).astype(coordinate if k in "xy" else polarity) for k in "xyp"}
    columns["t"] = np.ascontiguousarray(events["t"])
    if how == "reversed":
        columns = {k: np.ascontiguousarray(v[::-1])[::-1] for k, v in columns.items()}
        assert columns["x"].strides[0] < 0 or len(events) < 2
    return columns


@native
@pytest.mark.parametrize("coordinate, polarity, how", LAYOUTS)
def test_native_equals_numpy_and_reference_on_every_layout(monkeypatch, calls, coordinate, polarity, how):
    rng = np.random.default_rng(3)
    for case in range(40):
        n = int(rng.integers(0, 3000)) if case else 0
        height, width = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        frames_number = int(rng.integers(1, 12))
        events = layout(random_events(rng, n, height, width, sort=case % 4 != 0), coordinate, polarity, how)
        for split_by in ("number", "time"):
            ours = events_to_frames(events, frames_number, split_by, (width, height, 2))
            assert np.array_equal(ours, numpy_path(monkeypatch, events, frames_number, split_by, (width, height, 2)))
            assert np.array_equal(ours, events_to_frames_ref(events, frames_number, split_by, (width, height, 2)))
    assert len(calls) == 2 * 39  # every non-empty case counted natively


@native
@pytest.mark.parametrize(
    "split_by, frames_number, order",
    [("number", 7, "sorted"), ("number", 1, "sorted"), ("time", 9, "gap"), ("time", 5, "unsorted")],
)
def test_thread_count_does_not_change_frames(calls, split_by, frames_number, order):
    """Shares that enter a segment midway, a single segment split 16 ways, empty time windows
    (gap), and the overlapping segments of unsorted timestamps."""
    rng = np.random.default_rng(4)
    events = random_events(rng, 300_001, 128, 128, sort=order != "unsorted")
    if order == "gap":
        events["t"][len(events) // 3 :] += 10**9  # windows in the gap are empty
    j_l, j_r = frames_module._segments(events["t"], split_by, frames_number)
    if order == "gap":
        assert (j_l == j_r).any()
    if order == "unsorted":
        assert (j_l[1:] < j_r[:-1]).any()  # overlapping segments
    expected = events_to_frames_ref(events, frames_number, split_by)
    for threads in (1, 2, 3, 5, 16):
        out = np.zeros_like(expected)
        bad = frames_module._native.count(
            events["x"], events["y"], events["p"], j_l, j_r, 128, 128, out.reshape(-1), threads
        )
        assert bad == -1 and np.array_equal(out, expected), threads
    assert calls == [1, 2, 3, 5, 16]


@native
def test_large_recordings_use_threads(calls, monkeypatch):
    events = random_events(np.random.default_rng(5), 4 * frames_module._EVENTS_PER_THREAD, 128, 128)
    monkeypatch.setattr(frames_module.torch, "get_num_threads", lambda: 2)
    threaded = events_to_frames(events, 4)
    monkeypatch.setattr(frames_module.torch, "get_num_threads", lambda: 1)
    single = events_to_frames(events, 4)
    assert calls == [2, 1] and np.array_equal(threaded, single)


@native
def test_the_counter_obeys_the_one_thread_setting(calls, monkeypatch):
    """sj_qvm.ops.settings' max_threads caps the counter's threads as it caps the ops' kernels."""
    from sj_qvm.ops import settings
    events = random_events(np.random.default_rng(5), 4 * frames_module._EVENTS_PER_THREAD, 128, 128)
    monkeypatch.setattr(frames_module.torch, "get_num_threads", lambda: 4)
    with settings.configured(max_threads=2):
        capped = events_to_frames(events, 4)
    free = events_to_frames(events, 4)
    assert calls == [2, 4] and np.array_equal(capped, free)


@native
def test_polarity_is_any_nonzero(calls):
    columns = {
        "t": np.arange(4),
        "x": np.array([0, 1, 2, 3], np.int16),
        "y": np.zeros(4, np.int16),
        "p": np.array([0, 2, -1, 1], np.int8),
    }
    frames = events_to_frames(columns, 1, sensor_size=(4, 1, 2))
    assert frames[0, 0, 0].tolist() == [1, 0, 0, 0] and frames[0, 1, 0].tolist() == [0, 1, 1, 1]
    assert calls == [1]


@native
@pytest.mark.parametrize(
    "field, value, dtype",
    [("x", -1, "<i2"), ("x", 128, "<i2"), ("y", 128, "<i2"), ("y", -32768, "<i2"), ("x", 40000, "<u2"),
     ("x", -1, "<i8"), ("y", 2**40, "<i8"), ("x", 2**63, "<u8")],
)
def test_rejects_events_outside_the_sensor_anywhere(calls, field, value, dtype):
    rng = np.random.default_rng(6)
    events = random_events(rng, 2 * frames_module._EVENTS_PER_THREAD + 7, 128, 128)
    columns = {k: np.ascontiguousarray(events[k]).astype(dtype if k in "xy" else events[k].dtype) for k in "txyp"}
    columns[field][len(events) * 3 // 4] = value  # in the second thread's half
    with pytest.raises(ValueError, match=r"outside sensor_size \(W, H, P\) = \(128, 128, 2\)"):
        events_to_frames(columns, 4)
    assert calls, "the C counter was not called"


@native
def test_unreadable_columns_fall_back_to_numpy(calls):
    events = random_events(np.random.default_rng(7), 500, 16, 16)
    float_x = {k: np.asarray(events[k], dtype=np.float64 if k == "x" else None) for k in "txyp"}
    swapped = {k: np.asarray(events[k]).astype(events[k].dtype.newbyteorder(">")) for k in "txyp"}
    expected = events_to_frames_ref(events, 3, sensor_size=(16, 16, 2))
    assert np.array_equal(events_to_frames(swapped, 3, sensor_size=(16, 16, 2)), expected)
    assert np.array_equal(events_to_frames(float_x, 3, sensor_size=(16, 16, 2)), expected)
    wide = np.zeros(3, dtype=EVENT_DTYPE)
    wide["x"] = [0, 5, 32767]
    frames = events_to_frames(wide, 1, sensor_size=(40_000, 1, 2))  # wider than the C counter takes
    assert frames[0, 0, 0, [0, 5, 32767]].tolist() == [1, 1, 1] and frames.sum() == 3
    assert calls == []


@native
def test_counter_rejects_bad_arguments():
    count = frames_module._native.count
    x = np.zeros(10, np.int16)
    bounds = np.array([0], np.int64), np.array([10], np.int64)
    out = np.zeros((1, 2, 4, 4), np.uint32)
    with pytest.raises(ValueError, match=r"threads must be in \[1, 16\], got 0"):
        count(x, x, x, *bounds, 4, 4, out, 0)
    with pytest.raises(ValueError, match=r"threads must be in \[1, 16\], got 17"):
        count(x, x, x, *bounds, 4, 4, out, 17)
    with pytest.raises(ValueError, match="y must be 1-D with the length of x"):
        count(x, x[:5], x, *bounds, 4, 4, out, 1)
    with pytest.raises(ValueError, match="x must be 1-D"):
        count(x.reshape(2, 5), x, x, *bounds, 4, 4, out, 1)
    with pytest.raises(TypeError, match="x must be a native-order integer or bool array, got format 'd'"):
        count(x.astype(np.float64), x, x, *bounds, 4, 4, out, 1)
    with pytest.raises(ValueError, match=r"out must be a uint32 array of shape \[T, 2, height, width\]"):
        count(x, x, x, *bounds, 4, 4, out.astype(np.float32), 1)
    with pytest.raises(ValueError, match=r"out must be a uint32 array"):
        count(x, x, x, *bounds, 4, 5, out, 1)
    with pytest.raises(ValueError, match=r"segment 0 is \[0, 11\), outside \[0, 10\]"):
        count(x, x, x, bounds[0], np.array([11], np.int64), 4, 4, out, 1)
    with pytest.raises(ValueError, match=r"segment 0 is \[3, 2\)"):
        count(x, x, x, np.array([3], np.int64), np.array([2], np.int64), 4, 4, out, 1)
    with pytest.raises(ValueError, match="j_l and j_r must be int64 arrays of one length"):
        count(x, x, x, bounds[0].astype(np.int32), bounds[1], 4, 4, out, 1)
    out.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        count(x, x, x, *bounds, 4, 4, out, 1)
    assert not out.any()


UBSAN_CHECK = """
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("_count", sys.argv[1])
count = importlib.util.module_from_spec(spec); spec.loader.exec_module(count)
from sj_qvm.datasets.frames import _segments, events_to_frames_ref
from sj_qvm.datasets.aedat import EVENT_DTYPE
rng = np.random.default_rng(0)
for n, threads, dtype in [(1000, 1, "<i2"), (300_000, 3, "<i2"), (5000, 2, "<u8"), (5000, 4, "<i4")]:
    events = np.zeros(n, EVENT_DTYPE)
    events["t"] = np.sort(rng.integers(0, 10 * n, n))
    for k, size in (("x", 128), ("y", 128), ("p", 2)):
        events[k] = rng.integers(0, size, n)
    j_l, j_r = _segments(events["t"], "number", 5)
    out = np.zeros((5, 2, 128, 128), np.uint32)
    x, y = (np.ascontiguousarray(events[k]).astype(dtype) for k in "xy")
    assert count.count(x, y, events["p"], j_l, j_r, 128, 128, out.reshape(-1), threads) == -1
    assert np.array_equal(out, events_to_frames_ref(events, 5))
    x[n // 2] = -1 if dtype != "<u8" else 2**63
    assert count.count(x, y, events["p"], j_l, j_r, 128, 128, out.reshape(-1), threads) >= 0
print("ok")
"""


def compile_counter(tmp_path, *flags):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    source = Path(frames_module.__file__).with_name("_count.c")
    library = tmp_path / ("_count" + sysconfig.get_config_var("EXT_SUFFIX"))
    command = [compiler, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-fPIC", "-shared",
               *flags, f"-I{sysconfig.get_paths()['include']}", str(source), "-o", str(library)]
    return subprocess.run(command, capture_output=True, text=True), library


def test_counter_source_compiles_without_warnings(tmp_path):
    built, _ = compile_counter(tmp_path)
    assert built.returncode == 0, built.stderr


def test_counter_has_no_undefined_behaviour(tmp_path):
    """Built with UBSan (aborting on the first report): in-range, out-of-range, wide and threaded."""
    built, library = compile_counter(tmp_path, "-fsanitize=undefined", "-fno-sanitize-recover=all")
    if built.returncode != 0:
        pytest.skip(f"no UBSan runtime: {built.stderr.strip()[:200]}")
    ran = subprocess.run([sys.executable, "-c", UBSAN_CHECK, str(library)], capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0 and ran.stdout.strip() == "ok", ran.stderr[-2000:]
