"""Event datasets: AEDAT readers, event-to-frame integration, DVS128 Gesture and CIFAR10-DVS, and
a DVS emulator that records images moving on a virtual screen, as CIFAR10-DVS was recorded.

Imports only numpy, torch and tqdm (scikit-learn for its digits, when they are asked for);
SpikingJelly is needed nowhere here.
"""
from .aedat import DVS128_SENSOR_SIZE, EVENT_DTYPE, read_aedat2, read_aedat31
from .cifar10_dvs import CIFAR10DVS
from .dvs_gesture import DVSGesture
from .emulated_release import EMULATED_RELEASE_VERSION, write_emulated_release
from .emulator import DVSSettings, emulate_dvs
from .frames import events_to_frames
from .representations import REPRESENTATIONS, representation

__all__ = ["EVENT_DTYPE", "DVS128_SENSOR_SIZE", "read_aedat31", "read_aedat2", "events_to_frames",
           "DVSGesture", "CIFAR10DVS", "emulate_dvs", "DVSSettings", "write_emulated_release",
           "EMULATED_RELEASE_VERSION", "REPRESENTATIONS", "representation"]
