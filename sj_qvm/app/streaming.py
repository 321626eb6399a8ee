"""The DVS pipeline's streaming rows: the instant-current SNN with its first layer's V0 fitted to
the instant current (:func:`sj_qvm.streaming.calibrate_instant`, ``--calibrate-instant``), and the
SNN fine-tuned in the instant current by surrogate BPTT, read with the delayed readout
(:func:`sj_qvm.streaming_finetune.finetune_instant`, ``--finetune-instant EPOCHS``).
"""
from __future__ import annotations

import torch

from ..convert import convert
from ..datasets.frames_dataset import Frames, to_time_major
from ..streaming import calibrate_instant
from ..streaming_finetune import finetune_instant

__all__ = ["CALIBRATED", "CALIBRATION_SAMPLES", "FINETUNED", "calibration_sequences",
           "calibrated_snn", "finetune_time_steps", "finetuned_snn", "multi_t_batches"]

#: The ``snn_accuracy`` key (``results.json``) of the calibrated instant-current row.
CALIBRATED = "instant_calibrated"
#: Training samples the V0 are fitted on (the first ones of a fixed shuffle).
CALIBRATION_SAMPLES = 64
#: The ``snn_accuracy`` key of the fine-tuned instant-current row (delayed readout).
FINETUNED = "instant_finetuned"


def calibration_sequences(spec, root, time_steps: int, frames: int, size: int,
                          seed: int = 0, progress: bool = True) -> torch.Tensor:
    """``[T, B, 2, size, size]``: B = min(64, train samples) training samples (no augmentation)
    integrated into T = ``time_steps`` frames and scaled by T / ``frames``, as the test set is."""
    ds = Frames(spec.make(root, True, time_steps, progress=progress), size,
                scale=time_steps / frames)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    picked = order[:CALIBRATION_SAMPLES].tolist()
    return to_time_major(torch.stack([ds[i][0] for i in picked]))


def calibrated_snn(ann, time_steps: int, spec, root, args, device):
    """The instant-current SNN of ``ann`` at T = ``time_steps``, its first layer's V0 fitted."""
    snn = convert(ann, time_steps=time_steps, current="instant", warn=False).to(device)
    x_seq = calibration_sequences(spec, root, time_steps, args.frames, args.size, args.seed,
                                  not args.quiet)
    return calibrate_instant(snn, x_seq.to(device))


def multi_t_batches(spec, root, time_steps, frames: int, size: int, batch_size: int,
                    seed: int = 0, augment: bool = True, progress: bool = True):
    """``batches(epoch)`` for :func:`sj_qvm.streaming_finetune.finetune_instant`: the training
    set (augmented as the ANN was trained, unless ``augment`` is False) in a fresh order each
    epoch, each batch ``(frames [B, T, 2, size, size],
    labels [B])`` at a T drawn from ``time_steps``, its events integrated into T frames and
    scaled by T / ``frames`` (so that their mean over T is the ANN's input)."""
    time_steps = tuple(time_steps)
    sets = {T: Frames(spec.make(root, True, T, progress=progress), size, scale=T / frames,
                      train=augment,
                     flip=spec.flip)
            for T in time_steps}
    n = len(sets[time_steps[0]])

    def batches(epoch):
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        torch.manual_seed(seed * 1000 + epoch)  # the augmentation's draws
        order = torch.randperm(n, generator=g).tolist()
        for i in range(0, n, batch_size):
            T = time_steps[int(torch.randint(len(time_steps), (1,), generator=g))]
            items = [sets[T][j] for j in order[i:i + batch_size]]
            yield torch.stack([f for f, _ in items]), torch.tensor([l for _, l in items])
    return batches


def finetune_time_steps(levels: int) -> tuple:
    """The T the fine-tune draws from: L, 2L and 4L (4, 8 and 16 at L = 4)."""
    return (levels, 2 * levels, 4 * levels)


def finetuned_snn(ann, spec, root, args, device):
    """``ann`` converted, then fine-tuned in the instant current for ``args.finetune_instant``
    epochs on the training set at T in :func:`finetune_time_steps` (one SNN for every T)."""
    snn = convert(ann, current="instant", warn=False).to(device)
    batches = multi_t_batches(spec, root, finetune_time_steps(args.levels), args.frames,
                              args.size, args.batch_size, args.seed, progress=not args.quiet)
    torch.manual_seed(args.seed)
    return finetune_instant(snn, ann, batches, args.finetune_instant, progress=not args.quiet)
