"""Shared test setup.

Real event-camera recordings (for the AEDAT readers and the frame integrator) are read from the
folder named by the environment variable ``SJ_QVM_EVENTS_DIR``; without it, from
``../shared/data/events`` beside the checkout where that folder exists. The files it may hold are
listed in ``EVENTS_DIR_FILES``; tests that need one skip, naming the variable, when it is absent.
"""
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
warnings.filterwarnings("ignore", category=FutureWarning)  # SJ 0.14 uses torch.jit.script
torch.set_num_threads(min(2, os.cpu_count() or 1))

EVENTS_DIR_VARIABLE = "SJ_QVM_EVENTS_DIR"
EVENTS_DIR_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "events"
EVENTS_DIR_FILES = {
    "dvs128_aedat2_alex_walking_again.aedat": "DVS128 AEDAT 2.0, 19,182 events",
    "dvs128_aedat2_neal_walking.aedat": "DVS128 AEDAT 2.0, 70,304 events",
    "dvs128_aedat2_cam255_right_clamp_test1.aedat": "DVS128 AEDAT 2.0, 110,228 events",
    "davis240c_aedat2_IMU_translBoxes.aedat": "DAVIS240C AEDAT 2.0 with IMU words: not a DVS128",
    "aedat2_header_only_davis346red_tonic.aedat": "AEDAT 2.0 header only, zero events",
}


def events_dir() -> Path | None:
    """The folder of real recordings: ``$SJ_QVM_EVENTS_DIR`` if set, else the shared folder beside
    the checkout if it exists, else None. A variable that names no folder is an error, not a skip:
    whoever set it asked for these tests to run."""
    chosen = os.environ.get(EVENTS_DIR_VARIABLE)
    if chosen:
        folder = Path(chosen)
        if not folder.is_dir():
            raise pytest.UsageError(f"{EVENTS_DIR_VARIABLE}={chosen!r} is not a folder")
        return folder
    return EVENTS_DIR_DEFAULT if EVENTS_DIR_DEFAULT.is_dir() else None


def events_file(name: str) -> Path:
    """The real recording ``name`` (one of ``EVENTS_DIR_FILES``); skips the test, naming
    ``SJ_QVM_EVENTS_DIR``, when it is not there."""
    folder = events_dir()
    needs = f"needs the real recording {name} ({EVENTS_DIR_FILES[name]})"
    if folder is None:
        pytest.skip(f"{needs}: set {EVENTS_DIR_VARIABLE} to a folder that holds it "
                    f"({EVENTS_DIR_VARIABLE} is unset and {EVENTS_DIR_DEFAULT} does not exist)")
    if not (folder / name).is_file():
        source = (f"{EVENTS_DIR_VARIABLE}" if os.environ.get(EVENTS_DIR_VARIABLE)
                  else f"the default while {EVENTS_DIR_VARIABLE} is unset")
        pytest.skip(f"{needs}: {folder} ({source}) does not hold it")
    return folder / name


@pytest.fixture
def real_recording():
    """``real_recording(name)``: the path of a real recording, or a skip naming SJ_QVM_EVENTS_DIR."""
    return events_file


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def small_shares():
    """The compiled CPU kernels split work between threads from 32768 elements per thread (the
    default waits for 0.5 M), so that small test tensors exercise the split; restored after."""
    from sj_qvm.ops import native
    if not native.available():
        yield None
        return
    saved = native.min_share()
    native.min_share(32768)
    try:
        yield 32768
    finally:
        native.min_share(saved)
