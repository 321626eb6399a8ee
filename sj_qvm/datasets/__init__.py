"""Event datasets: AEDAT readers, event-to-frame integration, DVS128 Gesture and CIFAR10-DVS.

Imports only numpy, torch and tqdm; SpikingJelly is needed nowhere here.
"""
from .aedat import DVS128_SENSOR_SIZE, EVENT_DTYPE, read_aedat2, read_aedat31
from .cifar10_dvs import CIFAR10DVS
from .dvs_gesture import DVSGesture
from .frames import events_to_frames
from .representations import REPRESENTATIONS, representation

__all__ = ["EVENT_DTYPE", "DVS128_SENSOR_SIZE", "read_aedat31", "read_aedat2", "events_to_frames",
           "DVSGesture", "CIFAR10DVS", "REPRESENTATIONS", "representation"]
