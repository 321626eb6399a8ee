"""Remedies for the instant current on streamed event frames, measured over T on finished DVS
pipeline runs (``--input mean``).

For each run it streams the test set one frame per step (events integrated into T frames, scaled
by T / frames as the pipeline does) at T = 1, 2, 4, 8, 16 and reports the instant current's
accuracy with each remedy:

* ``none``: the converted net;
* ``v0_fit``: the first layer's V0 fitted at each T (:func:`sj_qvm.streaming.calibrate_instant`);
* ``readout_half``: the output averaged over the second half of the steps only (a delayed
  readout);
* ``ft4``: an SNN fine-tune in the instant current at T = 4 only
  (:func:`sj_qvm.streaming_finetune.finetune_instant`);
* ``ft_multi``: the same fine-tune, each batch at a T drawn from {4, 8, 16};
* ``ft_multi_v0``: ``ft_multi`` with a learned per-channel V0 in every layer;
* ``ann_subwindow``: the ANN QAT-fine-tuned on the means of random contiguous sub-windows of the
  frames, then converted;
* ``ann_mixed``: the ANN QAT-fine-tuned on single frames (scaled to the mean's size) mixed with
  mean frames, then converted.

    python benchmarks/streaming_remedies.py runs/demo emulated_digits [--json x.json]
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from sj_qvm import _compat, convert
from sj_qvm.app import registry
from sj_qvm.app.streaming import multi_t_batches
from sj_qvm.datasets.frames_dataset import Frames
from sj_qvm.qat import fit
from sj_qvm.streaming import calibrate_instant
from sj_qvm.streaming_finetune import finetune_instant
from sj_qvm.app.streaming import calibration_sequences

from streaming_diagnosis import TS, load_run, test_set

REMEDIES = ("none", "v0_fit", "readout_half", "ft4", "ft_multi", "ft_multi_v0", "ann_subwindow",
            "ann_mixed")


def accuracy(snn, x_seq, y, start: int = 0) -> float:
    """Top-1 % of ``snn`` streaming ``x_seq [T, B, *]``, the output averaged over steps >= start."""
    outs = []
    with torch.no_grad():
        for i in range(0, x_seq.shape[1], 100):
            _compat.reset_net(snn)
            outs.append(snn(x_seq[:, i:i + 100]))
    _compat.reset_net(snn)
    out = torch.cat(outs, 1)
    return 100 * (out[start:].mean(0).argmax(1) == y).float().mean().item()


def subwindow_mean(frames: torch.Tensor) -> torch.Tensor:
    """``[B, T, *] -> [B, *]``: per sample, the mean of a random contiguous run of 1..T of its
    frames (what one or a few streamed frames look like to the first layer)."""
    B, T = frames.shape[:2]
    n = torch.randint(1, T + 1, (B,))
    start = (torch.rand(B) * (T - n + 1)).long()
    t = torch.arange(T)
    mask = ((t >= start[:, None]) & (t < (start + n)[:, None])).to(frames.dtype)
    return (frames * mask.view(B, T, *[1] * (frames.ndim - 2))).sum(1) / n.view(
        B, *[1] * (frames.ndim - 2)).to(frames.dtype)


def mixed_frames(frames: torch.Tensor) -> torch.Tensor:
    """``[B, T, *] -> [B, *]``: half the samples read one random frame, the rest the mean."""
    B, T = frames.shape[:2]
    one = frames[torch.arange(B), torch.randint(0, T, (B,))]
    keep = (torch.rand(B) < 0.5).view(B, *[1] * (frames.ndim - 2)).to(frames.dtype)
    return keep * one + (1 - keep) * frames.mean(1)


def ann_finetuned(ann, train_ds, prepare, epochs, lr, seed):
    ann = copy.deepcopy(ann)
    torch.manual_seed(seed)

    def batches(epoch):
        return torch.utils.data.DataLoader(train_ds, batch_size=32, shuffle=True,
                                           generator=torch.Generator().manual_seed(seed + epoch))
    fit(ann, torch.optim.Adam(ann.parameters(), lr=lr), batches, epochs, prepare=prepare,
        progress=False)
    return ann.eval()


def measure(run: Path, spec, remedies, epochs: int, lr: float, seed=None) -> dict:
    ann, a = load_run(run, spec)
    root = Path(a["root"])
    seed = a["seed"] if seed is None else seed  # the fine-tunes' data order and augmentation
    tests = {T: test_set(spec, a, T) for T in TS}
    x4, y4 = tests[a["frames"]]
    ann_acc = 100 * (ann(x4.mean(0)).argmax(1) == y4).float().mean().item()
    rows = {}

    def sweep(name, make, start=lambda T: 0, train_s=0.0, **extra):
        t0 = time.perf_counter()
        rows[name] = dict({f"T={T}": round(accuracy(make(T), *tests[T], start(T)), 2) for T in TS},
                          **extra)
        rows[name]["seconds"] = round(time.perf_counter() - t0 + train_s, 1)
        print(json.dumps({"dataset": spec.name, "remedy": name, **rows[name]}), flush=True)

    instant = lambda net: (lambda T: convert(net, time_steps=T, current="instant", warn=False))
    if "none" in remedies:
        sweep("none", instant(ann))
    if "readout_half" in remedies:
        sweep("readout_half", instant(ann), start=lambda T: T // 2)
    if "v0_fit" in remedies:
        sweep("v0_fit", lambda T: calibrate_instant(instant(ann)(T), calibration_sequences(
            spec, root, T, a["frames"], a["size"], a["seed"])))
    for name, Ts, learn in (("ft4", (4,), False), ("ft_multi", (4, 8, 16), False),
                            ("ft_multi_v0", (4, 8, 16), True)):
        if name not in remedies:
            continue
        t0 = time.perf_counter()
        snn = convert(ann, current="instant", warn=False)
        torch.manual_seed(seed)
        batches = multi_t_batches(spec, root, Ts, a["frames"], a["size"], 32, seed)
        finetune_instant(snn, ann, batches, epochs, lr=lr, learn_v_init=learn, progress=False)
        train_s = time.perf_counter() - t0
        sweep(name, lambda T: snn, train_s=train_s)
        sweep(name + "+readout_half", lambda T: snn, start=lambda T: T // 2)
    train4 = Frames(spec.make(root, True, a["frames"]), a["size"], train=True, flip=spec.flip)
    for name, prep in (("ann_subwindow", subwindow_mean), ("ann_mixed", mixed_frames)):
        if name not in remedies:
            continue
        t0 = time.perf_counter()
        tuned = ann_finetuned(ann, train4, prep, epochs, lr, seed)
        acc = 100 * (tuned(x4.mean(0)).argmax(1) == y4).float().mean().item()
        sweep(name, instant(tuned), train_s=time.perf_counter() - t0, ann=round(acc, 2))
    return {"run": str(run), "dataset": spec.name, "ann": ann_acc, "test_samples": len(y4),
            "epochs": epochs, "lr": lr, "seed": seed, "rows": rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", help="RUN_DIR DATASET pairs")
    p.add_argument("--remedies", nargs="+", choices=REMEDIES, default=list(REMEDIES))
    p.add_argument("--epochs", type=int, default=3, help="fine-tune epochs (SNN and ANN)")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tune learning rate (Adam)")
    p.add_argument("--seed", type=int, default=None,
                   help="the fine-tunes' seed (None: the run's)")
    p.add_argument("--json", type=Path, help="append every figure here (one JSON per run)")
    args = p.parse_args(argv)
    if len(args.runs) % 2:
        p.error("runs come in RUN_DIR DATASET pairs")
    specs = {s.name: s for s in (registry.DVS_GESTURE, registry.CIFAR10_DVS,
                                 registry.EMULATED_DIGITS)}
    torch.manual_seed(0)
    for run, name in zip(args.runs[::2], args.runs[1::2]):
        res = measure(Path(run), specs[name], args.remedies, args.epochs, args.lr, args.seed)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
