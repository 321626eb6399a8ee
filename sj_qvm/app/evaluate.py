"""The DVS pipeline's evaluation: ANN and SNN accuracy, conversion over T, the results and report.

The ANN reads the representation ``--input`` of the T frames
(:mod:`sj_qvm.datasets.representations`): by default of ``mean``, the time-averaged frame. A
streaming representation (``mean``) gives the SNN the T frames as its input current sequence, so
in expected mode its first layer receives exactly the ANN's input; to run it at another T', the
events are integrated into T' frames and scaled by T'/T, which keeps their mean (the expected
current) equal to the ANN's input. The others (``stack``, ``bins:K``) give the SNN the ANN's
input itself, computed from the recording's T frames and held constant for T' steps.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import torch

from .. import _compat, analysis
from ..accuracy import confusion_matrix, pair_accuracy
from ..atomic import write_atomic
from ..levels import is_exact
from ..convert import convert
from ..datasets.frames_dataset import Frames
from ..datasets.representations import mean_frame, representation
from ..plots import plot_confusion
from ..streaming import READOUT_DELAY, delayed_readout
from .streaming import CALIBRATED, FINETUNED, calibrated_snn, finetuned_snn

__all__ = ["predict_ann", "evaluate_ann", "evaluate_snn", "convert_and_report", "check_exact",
           "promises_exact"]


def predict_ann(model, loader, device, rep=mean_frame) -> tuple:
    """``(predictions [N], labels [N])`` of the ANN on ``(frames [B, T, 2, H, W], label [B])``
    batches; it reads ``rep(frames)`` (a representation, the time-averaged frame by default).
    Puts ``model`` in eval mode."""
    model.eval()
    preds, labels = [], []
    with torch.no_grad():
        for frames, y in loader:
            preds.append(model(rep(frames.to(device))).argmax(1).cpu())
            labels.append(y)
    if not preds:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(preds), torch.cat(labels)


def evaluate_ann(model, loader, device, rep=mean_frame) -> float:
    """Top-1 accuracy of :func:`predict_ann`'s predictions."""
    pred, y = predict_ann(model, loader, device, rep)
    return (pred == y).sum().item() / max(1, len(y))


def evaluate_snn(snn, loader, device, rep=None, time_steps=None, delay: float = 0.0) -> float:
    """Top-1 accuracy of the multi-step SNN on ``(frames [B, T, 2, H, W], label [B])`` batches: it
    reads ``rep.snn_input(frames, time_steps)`` (by default the T frames as ``[T, B, 2, H, W]``)
    and the prediction is its output's mean over the steps (over the steps from
    ``floor(delay * T)`` on: :func:`sj_qvm.streaming.delayed_readout`)."""
    rep = representation("mean") if rep is None else rep
    correct = total = 0
    with torch.no_grad():
        for frames, y in loader:
            _compat.reset_net(snn)
            out = delayed_readout(snn(rep.snn_input(frames.to(device), time_steps)), delay)
            correct += (out.argmax(1).cpu() == y).sum().item()
            total += len(y)
    return correct / max(1, total)


def convert_and_report(ann, args, spec, root, test_ds, device) -> dict:
    """Evaluate ``ann`` and its SNNs over T; write the report files (of
    ``RUN_FILES["dvs"]`` in :mod:`.run_folder`) into ``args.out``.

    ``test_ds`` yields ``(frames [T, 2, size, size], label)`` with T = ``args.frames``. The
    report runs at T = ``args.frames`` for a streaming representation, at T = L for a held one
    (exact at T = L whatever the number of frames). Returns the
    results dict (what ``results.json`` holds).
    """
    from tqdm.auto import tqdm
    out = Path(args.out)
    L = args.levels
    rep = representation(args.input)
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=args.batch_size)
    pred, labels = predict_ann(ann, test_loader, device, rep)
    ann_acc = (pred == labels).sum().item() / max(1, len(labels))
    confusion = confusion_matrix(pred, labels, spec.num_classes)
    snn_acc: dict = {"instant": {}, "expected": {}}
    # The report's T: a streaming SNN runs one step per recorded frame; a held one L steps.
    T_report = args.frames if rep.streams else L
    Ts = sorted(set(args.eval_time_steps) | {T_report})
    # One fine-tuned SNN streams every T (a streaming --input: pipeline_args).
    tuned = finetuned_snn(ann, spec, root, args, device) \
        if getattr(args, "finetune_instant", 0) else None
    for T in tqdm(Ts, desc="SNN over T", disable=args.quiet, leave=False):
        if T == args.frames or not rep.streams:
            ds = test_ds  # a held representation is computed from the recording's T frames
        else:  # integrate the events into T frames, scaled so their mean is the ANN's input
            ds = Frames(spec.make(root, False, T, progress=not args.quiet), args.size,
                        scale=T / args.frames)
        loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size)
        steps = None if rep.streams else T
        for current in ("instant", "expected"):
            snn = convert(ann, time_steps=T, current=current, warn=False).to(device)
            snn_acc[current][T] = evaluate_snn(snn, loader, device, rep, steps)
        if getattr(args, "calibrate_instant", False):  # a streaming --input (pipeline_args)
            snn = calibrated_snn(ann, T, spec, root, args, device)
            snn_acc.setdefault(CALIBRATED, {})[T] = evaluate_snn(snn, loader, device, rep, steps)
        if tuned is not None:
            snn_acc.setdefault(FINETUNED, {})[T] = evaluate_snn(tuned, loader, device, rep, steps,
                                                                READOUT_DELAY)

    # Per-layer report on (up to) 64 test samples at T_report, instant and expected side by side.
    frames = torch.stack([test_ds[i][0] for i in range(min(64, len(test_ds)))]).to(device)
    report, exp64 = _reports(ann, rep, frames, T_report, device)
    exp = report.rows_by_current["expected"]
    results = {
        "dataset": spec.name, "synthetic": args.root is None, "arch": args.arch, "width": args.width,
        "levels": L, "rounding": args.rounding, "frames": args.frames, "size": args.size,
        "input": rep.name, "input_streams": rep.streams, "time_steps": T_report,
        "epochs": args.epochs, "test_samples": len(test_ds),
        "ann_accuracy": ann_acc, "snn_accuracy": {c: {str(T): a for T, a in v.items()}
                                                  for c, v in snn_acc.items()},
        "confusion": confusion.tolist(),
        "pair_accuracy": {"/".join(spec.classes[k] for k in pair): pair_accuracy(confusion, pair)
                          for pair in spec.order_pairs},
        **report_fields(report, exp64, exp),
    }
    write_atomic(out / "results.json", json.dumps(results, indent=2).encode("utf-8"))
    write_atomic(out / "conversion_report.md", report.to_markdown().encode("utf-8"))
    title = f"{spec.title}{' (synthetic)' if args.root is None else ''}, L = {L}"
    report.plot(out / "conversion_report.png", title=f"{title}: per-layer unevenness error")
    analysis.plot_accuracy_vs_time_steps({"ann": ann_acc, "snn": snn_acc},
                                         out / "accuracy_vs_T.png", levels=L, title=title)
    plot_confusion(confusion, out / "confusion.png", classes=spec.classes,
                   title=f"{title}, --input {rep.name}: ANN on the test split")
    return results


def _reports(ann, rep, frames, T: int, device):
    """The conversion report at T steps on ``frames [B, T, 2, H, W]`` (float32, both currents)
    and its expected-current rows in float64.

    Exactness is a statement about real arithmetic, checked in float64: in float32 the ANN and
    the SNN add synaptic inputs in different orders, and a few neurons in a million that sit
    within rounding of a level boundary can land on the other side (reported beside it). A held
    representation runs as a static input (the first layer computed once per sample)."""
    def report(net, x):
        snn = convert(net, time_steps=T, current="expected", warn=False).to(device)
        if rep.streams:
            return analysis.conversion_report(net, snn, rep.snn_input(x), sequence=True)
        return analysis.conversion_report(net, snn, rep(x), time_steps=T, sequence=False)
    report32 = report(ann, frames)
    report64 = report(copy.deepcopy(ann).double(), frames.double())
    return report32, report64.rows_by_current["expected"]


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
    the report's T, ``time_steps``, is not L)."""
    if not promises_exact(res):
        return True  # nothing promised
    snn = res["snn_accuracy"]["expected"][str(res["levels"])]
    return is_exact(res["mismatched_neurons"], res["ann_accuracy"], snn)


def promises_exact(res: dict) -> bool:
    """Whether a run's results promise exactness: its report ran at T = L (``time_steps``; runs
    written before it existed ran at T = ``frames``)."""
    return res.get("time_steps", res["frames"]) == res["levels"]
