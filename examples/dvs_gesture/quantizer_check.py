"""Does a trained run's ANN live on its quantizer? Its accuracy at other levels L' and with plain clip.

    python examples/dvs_gesture/quantizer_check.py RUN [RUN ...]

``RUN`` is the ``--out`` folder of a finished run of ``sj-qvm demo`` or of either example's
``train.py`` (it holds ``checkpoint.pt`` and ``results.json``). The trained ANN (QAT at L) is
evaluated on the run's test set with every QuantReLU set to L' in {2, 3, 4, 5, 6, 8, 16} and with
its quantizer removed (``clamp(x, 0, γ)``, "clip"); the SNN figures are the run's own
``results.json``. With the expected current and the matched V0 the SNN at T = L' computes the ANN
at L' exactly (round: V0 = θ/2), so the two rows agree wherever both have a column. A sound ANN
keeps most of its accuracy at every L' and with clip; one that scores near chance there learned
to use the dead zone of its own L (for round, everything below γ/(2L) is zero).

Prints one Markdown table per run.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from sj_qvm.app.checkpoint import load_checkpoint
from sj_qvm.datasets import CIFAR10DVS, DVSGesture
from sj_qvm.datasets.representations import representation
from sj_qvm.models import build_model
from sj_qvm.quant import QuantReLU

LEVELS = (2, 3, 4, 5, 6, 8, 16)
DATASETS = {"dvs_gesture": (DVSGesture, 11), "cifar10_dvs": (CIFAR10DVS, 10)}


class Clip(nn.Module):
    """``clamp(x, 0, γ)`` for ``x: [B, C, *]``: a QuantReLU without its quantizer."""

    def __init__(self, quant: QuantReLU):
        super().__init__()
        self.threshold = quant.threshold.detach().clone()

    def forward(self, x):
        t = self.threshold
        return torch.minimum(torch.relu(x), t.view(1, -1, *([1] * (x.ndim - 2))) if t.ndim else t)


def with_levels(model: nn.Module, levels) -> nn.Module:
    """A copy of ``model`` whose QuantReLUs use ``levels`` L' (``None``: clip)."""
    model = copy.deepcopy(model)
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, QuantReLU):
                if levels is None:
                    setattr(parent, name, Clip(child))
                else:
                    child.levels = levels
    return model


def test_set(args: dict, dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """``([N, C', size, size] ANN inputs, [N] labels)``, as the run's ANN saw them: its
    ``--input`` representation of the frames (``mean`` for runs from before ``--input``)."""
    ds = dataset(args["root"], train=False, frames_number=args["frames"], split_by="number")
    x = torch.stack([torch.as_tensor(f, dtype=torch.float32) for f, _ in ds])
    k = x.shape[-1] // args["size"]
    if k > 1:  # sum-pooling, as the pipeline's Frames does
        x = F.avg_pool2d(x.flatten(0, 1), k).unflatten(0, x.shape[:2]) * (k * k)
    return representation(args.get("input", "mean"))(x), torch.tensor([int(y) for _, y in ds])


def check(run: Path) -> dict:
    results = json.loads((run / "results.json").read_text())
    ckpt = load_checkpoint(run / "checkpoint.pt")
    args = ckpt["args"]
    dataset, classes = DATASETS[results["dataset"]]
    in_channels = representation(args.get("input", "mean")).channels(args["frames"])
    model = build_model(args["arch"], in_channels=in_channels, num_classes=classes, levels=args["levels"],
                        rounding=args["rounding"], width=args["width"],
                        channel_wise=not args["layer_thresholds"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    x, y = test_set(args, dataset)
    ann = {}
    with torch.no_grad():
        for L in LEVELS + (None,):
            ann["clip" if L is None else str(L)] = (with_levels(model, L)(x).argmax(1) == y).float().mean().item()
    return {"run": str(run), "dataset": results["dataset"], "levels": args["levels"],
            "seed": args["seed"], "epochs": args["epochs"], "ann_at": ann,
            "snn": results["snn_accuracy"], "chance": 1 / classes}


def to_markdown(res: dict) -> str:
    pct = lambda a: f"{100 * a:.1f}"  # noqa: E731
    head = "| " + " | ".join(f"L'={L}" for L in LEVELS) + " | clip |"
    lines = [f"{res['dataset']}, trained at L = {res['levels']}, seed {res['seed']}, "
             f"{res['epochs']} epochs (chance {pct(res['chance'])}%)", "",
             "| ANN " + head, "|---" * (len(LEVELS) + 2) + "|",
             "| | " + " | ".join(pct(res["ann_at"][str(L)]) for L in LEVELS) + f" | {pct(res['ann_at']['clip'])} |",
             ""]
    Ts = sorted(int(T) for T in res["snn"]["expected"])
    lines += ["| SNN current | " + " | ".join(f"T={T}" for T in Ts) + " |", "|---" * (len(Ts) + 1) + "|"]
    for c in ("expected", "instant"):
        lines.append(f"| {c} | " + " | ".join(pct(res["snn"][c][str(T)]) for T in Ts) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="--out folders of finished runs")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    a = p.parse_args(argv)
    for run in a.runs:
        for name in ("results.json", "checkpoint.pt"):
            if not (run / name).is_file():
                print(f"error: {run} holds no {name}: pass the --out folder of a finished run",
                      file=sys.stderr)
                return 2
    for run in a.runs:
        res = check(run)
        print(json.dumps(res) if a.json else to_markdown(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
