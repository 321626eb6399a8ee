"""The offline digits job: QAT a small CNN on scikit-learn's handwritten digits, convert, compare.

scikit-learn ships the 1,797 8x8 digit images, so this runs anywhere without a download.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn

from ..analysis import accuracy_vs_time_steps, compare_levels
from ..checks import check_int, check_levels, check_rounding
from ..convert import convert
from ..levels import is_exact
from ..qat import fit
from ..quant import QuantReLU
from .report import EXPLANATION

#: This job's name in :data:`.run_folder.RUN_FILES`.
JOB = "digits"


def load_digits_tensors(seed: int = 0, test_fraction: float = 0.2):
    """``(x_train [N,1,8,8], y_train [N], x_test, y_test)``, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(x) * test_fraction)
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]


def digits_cnn(levels: int = 4, rounding: str = "round", width: int = 16) -> nn.Sequential:
    """``[B, 1, 8, 8] -> [B, 10]``: two conv-BN-QuantReLU-avgpool stages and a linear classifier."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), QuantReLU(levels, rounding, 2.0),
        nn.AvgPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width),
        QuantReLU(levels, rounding, 2.0), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * 4, 10))


def train_qat(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 30,
              lr: float = 3e-3, batch_size: int = 64, seed: int = 0, progress: bool = True):
    """The digits recipe: QAT with Adam and a cosine schedule over ``(x [N, 1, 8, 8], y [N])``,
    through :func:`sj_qvm.qat.fit` (every threshold kept > 0); returns the model in eval mode.
    ``epochs = 0`` leaves the initial net."""
    check_int(epochs, "epochs", minimum=0)
    check_int(batch_size, "batch_size", minimum=1)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs))

    def batches(epoch):
        perm = torch.randperm(len(x), generator=g)
        return [(x[perm[i:i + batch_size]], y[perm[i:i + batch_size]])
                for i in range(0, len(x), batch_size)]
    fit(model, opt, batches, epochs, scheduler=sched, progress=progress)
    return model.eval()


def run_digits(levels: int = 4, rounding: str = "round", epochs: int = 30, seed: int = 0,
               time_steps=(1, 2, 4, 8, 16), progress: bool = True) -> dict:
    """Train, convert and evaluate at ``time_steps`` and T = L; returns every figure the demo
    prints."""
    check_levels(levels)
    check_rounding(rounding)
    check_int(epochs, "epochs", minimum=0)
    torch.manual_seed(seed)
    start = time.perf_counter()
    x_tr, y_tr, x_te, y_te = load_digits_tensors(seed)
    ann = train_qat(digits_cnn(levels, rounding), x_tr, y_tr, epochs=epochs, seed=seed,
                    progress=progress)
    time_steps = sorted(set(time_steps) | {levels})  # T = L, where it is exact, always
    acc = accuracy_vs_time_steps(ann, x_te, y_te, time_steps, progress=progress)
    rows = compare_levels(ann, convert(ann, current="expected"), x_te)
    return {
        "levels": levels, "rounding": rounding, "epochs": epochs, "test_samples": len(x_te),
        "ann_accuracy": acc["ann"], "snn_accuracy": acc["snn"],
        "neuron_evaluations": sum(r.neuron_evaluations for r in rows),
        "mismatched_neurons": sum(r.mismatched for r in rows),
        "seconds": time.perf_counter() - start,
    }


def format_table(res: dict) -> str:
    Ts = sorted(next(iter(res["snn_accuracy"].values())))
    lines = [f"digits, L = {res['levels']}, rounding = {res['rounding']}, "
             f"{res['test_samples']} test images",
             f"ANN accuracy: {100 * res['ann_accuracy']:.2f}%",
             "SNN accuracy    " + "".join(f"{'T=' + str(T):>9}" for T in Ts)]
    for current, accs in res["snn_accuracy"].items():
        lines.append(f"  {current:<14}" + "".join(f"{100 * accs[T]:8.2f}%" for T in Ts))
    L = res["levels"]
    lines.append(f"neurons with N != M at T = L = {L} (expected current): "
                 f"{res['mismatched_neurons']} of {res['neuron_evaluations']} (sample, neuron) pairs")
    at_L = res["snn_accuracy"].get("expected", {}).get(L)
    if at_L is not None:
        same = is_exact(res["mismatched_neurons"], res["ann_accuracy"], at_L)
        lines.append("exact: SNN accuracy at T = L (expected) equals the ANN's and N == M everywhere"
                     if same else "NOT exact at T = L (expected current)")
    lines.append(f"took {res['seconds']:.1f} s")
    return "\n".join(lines + [EXPLANATION])
