"""The DVS pipeline's streaming row: the instant-current SNN with its first layer's V0 fitted to
the instant current (:func:`sj_qvm.streaming.calibrate_instant`) on training frame sequences.
"""
from __future__ import annotations

import torch

from ..convert import convert
from ..datasets.frames_dataset import Frames, to_time_major
from ..streaming import calibrate_instant

__all__ = ["CALIBRATED", "CALIBRATION_SAMPLES", "calibration_sequences", "calibrated_snn"]

#: The ``snn_accuracy`` key (``results.json``) of the calibrated instant-current row.
CALIBRATED = "instant_calibrated"
#: Training samples the V0 are fitted on (the first ones of a fixed shuffle).
CALIBRATION_SAMPLES = 64


def calibration_sequences(spec, root, time_steps: int, frames: int, size: int,
                          seed: int = 0) -> torch.Tensor:
    """``[T, B, 2, size, size]``: B = min(64, train samples) training samples (no augmentation)
    integrated into T = ``time_steps`` frames and scaled by T / ``frames``, as the test set is."""
    ds = Frames(spec.make(root, True, time_steps), size, scale=time_steps / frames)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    picked = order[:CALIBRATION_SAMPLES].tolist()
    return to_time_major(torch.stack([ds[i][0] for i in picked]))


def calibrated_snn(ann, time_steps: int, spec, root, args, device):
    """The instant-current SNN of ``ann`` at T = ``time_steps``, its first layer's V0 fitted."""
    snn = convert(ann, time_steps=time_steps, current="instant", warn=False).to(device)
    x_seq = calibration_sequences(spec, root, time_steps, args.frames, args.size, args.seed)
    return calibrate_instant(snn, x_seq.to(device))
