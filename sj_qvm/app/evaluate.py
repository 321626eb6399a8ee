"""The DVS pipeline's evaluation: ANN and SNN accuracy, conversion over T, the results and report.

The ANN sees the time-averaged frame ``frames.mean(0)``; the SNN sees the T frames as its input
current sequence, so in expected mode its first layer receives exactly the ANN's input. To run the
SNN at another T', the events are integrated into T' frames and scaled by T'/T, which keeps their
mean (the expected current) equal to the ANN's input.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import torch

from .. import _compat, analysis
from ..atomic import write_atomic
from ..levels import is_exact
from ..convert import convert
from ..datasets.frames_dataset import Frames, to_time_major
from .streaming import CALIBRATED, calibrated_snn

__all__ = ["evaluate_ann", "evaluate_snn", "convert_and_report", "check_exact"]



def evaluate_ann(model, loader, device) -> float:
    """Top-1 accuracy of the ANN on ``(frames [B, T, 2, H, W], label [B])`` batches; it sees the
    time-averaged frame ``frames.mean(1)``. Puts ``model`` in eval mode."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for frames, y in loader:
            out = model(frames.to(device).mean(1))
            correct += (out.argmax(1).cpu() == y).sum().item()
            total += len(y)
    return correct / max(1, total)


def evaluate_snn(snn, loader, device) -> float:
    """Top-1 accuracy of the multi-step SNN on ``(frames [B, T, 2, H, W], label [B])`` batches: it
    reads the T frames as ``[T, B, 2, H, W]`` and the prediction is its output's mean over T."""
    correct = total = 0
    with torch.no_grad():
        for frames, y in loader:
            _compat.reset_net(snn)
            out = snn(to_time_major(frames.to(device))).mean(0)
            correct += (out.argmax(1).cpu() == y).sum().item()
            total += len(y)
    return correct / max(1, total)


def convert_and_report(ann, args, spec, root, test_ds, device) -> dict:
    """Evaluate ``ann`` and its SNNs over T; write the report files (of
    ``RUN_FILES["dvs"]`` in :mod:`.run_folder`) into ``args.out``.

    ``test_ds`` yields ``(frames [T, 2, size, size], label)`` with T = ``args.frames``. Returns the
    results dict (what ``results.json`` holds).
    """
    from tqdm.auto import tqdm
    out = Path(args.out)
    L = args.levels
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=args.batch_size)
    ann_acc = evaluate_ann(ann, test_loader, device)
    snn_acc: dict = {"instant": {}, "expected": {}}
    Ts = sorted(set(args.eval_time_steps) | {args.frames})
    for T in tqdm(Ts, desc="SNN over T", disable=args.quiet, leave=False):
        if T == args.frames:
            ds = test_ds
        else:  # integrate the events into T frames, scaled so their mean is the ANN's input
            ds = Frames(spec.make(root, False, T), args.size, scale=T / args.frames)
        loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size)
        for current in ("instant", "expected"):
            snn = convert(ann, time_steps=T, current=current, warn=False).to(device)
            snn_acc[current][T] = evaluate_snn(snn, loader, device)
        if getattr(args, "calibrate_instant", False):
            snn = calibrated_snn(ann, T, spec, root, args, device)
            snn_acc.setdefault(CALIBRATED, {})[T] = evaluate_snn(snn, loader, device)

    # Per-layer report on (up to) 64 test samples at T = frames, instant and expected side by side.
    frames = torch.stack([test_ds[i][0] for i in range(min(64, len(test_ds)))]).to(device)
    snn = convert(ann, time_steps=args.frames, current="expected", warn=False).to(device)
    report = analysis.conversion_report(ann, snn, to_time_major(frames), sequence=True)
    exp = report.rows_by_current["expected"]
    # Exactness is a statement about real arithmetic, checked in float64: in float32 the ANN and
    # the SNN add synaptic inputs in different orders, and a few neurons in a million that sit
    # within rounding of a level boundary can land on the other side (reported below).
    ann64 = copy.deepcopy(ann).double()
    snn64 = convert(ann64, time_steps=args.frames, current="expected", warn=False).to(device)
    exp64 = analysis.conversion_report(ann64, snn64, to_time_major(frames).double(),
                                       sequence=True).rows_by_current["expected"]
    results = {
        "dataset": spec.name, "synthetic": args.root is None, "arch": args.arch, "width": args.width,
        "levels": L, "rounding": args.rounding, "frames": args.frames, "size": args.size,
        "epochs": args.epochs, "test_samples": len(test_ds),
        "ann_accuracy": ann_acc, "snn_accuracy": {c: {str(T): a for T, a in v.items()}
                                                  for c, v in snn_acc.items()},
        **report_fields(report, exp64, exp),
    }
    write_atomic(out / "results.json", json.dumps(results, indent=2).encode("utf-8"))
    write_atomic(out / "conversion_report.md", report.to_markdown().encode("utf-8"))
    title = f"{spec.title}{' (synthetic)' if args.root is None else ''}, L = {L}"
    report.plot(out / "conversion_report.png", title=f"{title}: per-layer unevenness error")
    analysis.plot_accuracy_vs_time_steps({"ann": ann_acc, "snn": snn_acc},
                                         out / "accuracy_vs_T.png", levels=L, title=title)
    return results


def report_fields(report, rows64, rows32) -> dict:
    """The ``results.json`` fields both pipelines take from a conversion report: N != M counts
    (float64 ``rows64``, float32 ``rows32``: :class:`~sj_qvm.levels.LayerMatch` lists at T = L,
    expected current) with their denominator, the energy and the per-layer rows."""
    return {
        "mismatched_neurons": sum(r.mismatched for r in rows64),
        "mismatched_neurons_float32": sum(r.mismatched for r in rows32),
        "report_neurons": report.totals("expected")["neuron_evaluations"],
        "energy": {c: report.energy(c) for c in report.rows_by_current},
        "report": {c: [dataclasses.asdict(r) for r in rows]
                   for c, rows in report.rows_by_current.items()},
    }


def check_exact(res: dict) -> bool:
    """:func:`sj_qvm.levels.is_exact` on a run's results (True when the run promises nothing:
    frames != levels)."""
    if res["frames"] != res["levels"]:
        return True  # nothing promised
    snn = res["snn_accuracy"]["expected"][str(res["levels"])]
    return is_exact(res["mismatched_neurons"], res["ann_accuracy"], snn)
