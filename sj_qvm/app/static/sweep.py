"""The static pipeline's evaluation: ANN accuracy, the SNN over T x current x V0, the conversion
report, and the files of a run (written through :mod:`.tables`).

A static image ``x [B, 3, S, S]`` is the SNN's constant input current: ``[T, B, 3, S, S]`` with
``x`` at every step, so the first layer's instant and expected currents are the same. The
prediction is the output's mean over T. V0 is set on every :class:`~sj_qvm.QVMIFNode` after
``convert`` (``v_init = "floor" | "round" | "ceil"``, i.e. V0 = 0, theta/2, theta; the matched one
is the ANN's rounding).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Optional

import torch

from ... import _compat, analysis
from ...atomic import write_atomic
from ...checks import CURRENTS, ROUNDINGS
from ...convert import convert
from ...levels import is_exact
from ...neuron import QVMIFNode
from ..evaluate import report_fields
from ..resources import activation_sizes, snn_chunk
from . import tables

__all__ = ["evaluate_ann", "evaluate_snn", "set_v0", "sweep", "write_results",
           "check_exact"]

_REPORT_SAMPLES = 32


def evaluate_ann(model, loader, device) -> float:
    """Top-1 accuracy on ``(image [B, 3, S, S], label [B])`` batches; puts ``model`` in eval mode."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
            total += len(y)
    return correct / max(1, total)


def evaluate_snn(snn, loader, device, time_steps: int, chunk: Optional[int] = None) -> float:
    """Top-1 accuracy of the multi-step SNN, the image repeated over ``time_steps``; each batch
    runs in chunks of ``chunk`` samples (None: whole), which bounds the ``[T, chunk, *]``
    tensors."""
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            for xs, ys in zip(x.split(chunk or len(x)), y.split(chunk or len(y))):
                _compat.reset_net(snn)
                xs = xs.to(device)
                out = snn(xs.unsqueeze(0).expand(time_steps, *xs.shape)).mean(0)
                correct += (out.argmax(1).cpu() == ys).sum().item()
                total += len(ys)
    return correct / max(1, total)


def set_v0(snn, v0: str) -> None:
    """Set V0 of every QVM node: ``"floor"`` (0), ``"round"`` (theta/2) or ``"ceil"`` (theta)."""
    for m in snn.modules():
        if isinstance(m, QVMIFNode):
            m.v_init = v0


def sweep(ann, loader, device, rounding: str, time_steps, ablation: bool = True,
          progress: bool = False) -> dict:
    """``{current: {v0: {T: accuracy}}}`` for every T in ``time_steps``, both currents, and V0 in
    ``ROUNDINGS`` (only the matched ``rounding`` without ``ablation``). The SNN runs each batch
    in chunks that keep its ``[T, chunk, *]`` tensors within ``resources.SNN_CHUNK_BYTES``."""
    from tqdm.auto import tqdm
    v0s = ROUNDINGS if ablation else (rounding,)
    acc = {c: {v: {} for v in v0s} for c in CURRENTS}
    jobs = [(T, c) for T in time_steps for c in CURRENTS]
    x1 = next(iter(loader))[0][:1].to(device)
    acts = activation_sizes(ann, x1)  # for the chunks that bound the SNN's memory
    for T, current in tqdm(jobs, desc="SNN over T", disable=not progress, leave=False):
        snn = convert(ann, time_steps=T, current=current, warn=False).to(device)
        chunk = snn_chunk(T, x1.numel(), acts)
        for v0 in v0s:
            set_v0(snn, v0)
            acc[current][v0][T] = evaluate_snn(snn, loader, device, T, chunk)
    return acc


def _report(ann, images: torch.Tensor, levels: int):
    """The per-layer conversion report at T = L in float32, and the float64 expected rows."""
    snn = convert(ann, time_steps=levels, current="expected", warn=False).to(images.device)
    report = analysis.conversion_report(ann, snn, images, time_steps=levels, sequence=False)
    # Exactness is about real arithmetic, so it is checked in float64 (float32 sums in another
    # order can put a neuron at a level boundary on the other side).
    ann64 = copy.deepcopy(ann).double()
    snn64 = convert(ann64, time_steps=levels, current="expected", warn=False).to(images.device)
    rows64 = analysis.conversion_report(ann64, snn64, images.double(), time_steps=levels,
                                        sequence=False).rows_by_current["expected"]
    return report, rows64


def write_results(ann, args, spec, test_ds, device, progress: bool = False) -> dict:
    """Evaluate ``ann`` (eval mode) and its SNNs; write the result files (of
    ``RUN_FILES["static"]`` in :mod:`..run_folder`) into ``args.out``.

    ``test_ds`` yields ``(image [3, S, S], label)``. Returns the results dict (``results.json``).
    """
    out = Path(args.out)
    L = args.levels
    loader = torch.utils.data.DataLoader(test_ds, batch_size=args.batch_size)
    ann_acc = evaluate_ann(ann, loader, device)
    Ts = sorted(set(args.eval_time_steps) | {L})
    acc = sweep(ann, loader, device, args.rounding, Ts, not args.no_v0_ablation, progress)
    images = torch.stack([test_ds[i][0] for i in range(min(_REPORT_SAMPLES, len(test_ds)))])
    report, rows64 = _report(ann, images.to(device), L)
    f32 = report.rows_by_current["expected"]
    matched = {c: {str(T): a for T, a in acc[c][args.rounding].items()} for c in CURRENTS}
    results = {
        "dataset": spec.name, "arch": args.arch, "width": args.width, "init": args.init and
        str(args.init), "levels": L, "rounding": args.rounding, "image_size": args.image_size,
        "epochs": args.epochs, "test_samples": len(test_ds), "ann_accuracy": ann_acc,
        "snn_accuracy": matched,
        "v0_ablation": {c: {v: {str(T): a for T, a in d.items()} for v, d in acc[c].items()}
                        for c in CURRENTS},
        **report_fields(report, rows64, f32),
    }
    write_atomic(out / "results.json", json.dumps(results, indent=2).encode("utf-8"))
    write_atomic(out / "tables.md", tables.markdown(results).encode("utf-8"))
    write_atomic(out / "conversion_report.md", report.to_markdown().encode("utf-8"))
    title = f"{spec.title} {args.arch}, L = {L}, {args.rounding}"
    report.plot(out / "conversion_report.png", title=f"{title}: per-layer unevenness error")
    analysis.plot_accuracy_vs_time_steps(
        {"ann": ann_acc, "snn": {c: {int(T): a for T, a in d.items()} for c, d in
                                 matched.items()}},
        out / "accuracy_vs_T.png", levels=L, title=f"{title} (Figure 5 style, matched V0)")
    tables.plot_v0_ablation(results, out / "v0_ablation.png", title=title)
    return results


def check_exact(res: dict) -> bool:
    """:func:`sj_qvm.levels.is_exact` at T = L, expected current, matched V0."""
    snn = res["snn_accuracy"]["expected"][str(res["levels"])]
    return is_exact(res["mismatched_neurons"], res["ann_accuracy"], snn)
