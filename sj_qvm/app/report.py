"""What the training jobs print: the epoch line, the results table, what it means, and where the
files went. The full figures go to ``log.jsonl`` and ``results.json``; the terminal gets short,
rounded lines.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..report import format_energy
from .streaming import CALIBRATED, FINETUNED

__all__ = ["EXPLANATION", "format_epoch", "format_summary", "format_written"]

#: The results table's rows: ``snn_accuracy`` key and label (a row shows when its key is there).
ROWS = (("instant", "instant"), (CALIBRATED, "instant, V0 fit"),
        (FINETUNED, "instant, tuned"), ("expected", "expected"))
#: Printed under the table when it has the :data:`~.streaming.CALIBRATED` row.
CALIBRATED_EXPLANATION = """\
instant, V0 fit: the instant current, with each first-layer channel's initial potential V0 set
  (on training sequences at that T) so that its mean spike count equals the expected current's;
  without it the first layer fires on every positive swing of the frame current and cannot take
  those spikes back (sj_qvm.streaming)."""
#: Printed under the table when it has the :data:`~.streaming.FINETUNED` row.
FINETUNED_EXPLANATION = """\
instant, tuned: the instant current after a short fine-tune of the converted SNN on the training
  set streamed at T = L, 2L and 4L (surrogate BPTT, cross-entropy + KL to the ANN), its output
  read over the second half of the steps; it learns to live with the first layers' rectified
  spikes (sj_qvm.streaming_finetune). The expected row is the converted net, untouched."""

#: Printed under every results table (the DVS pipeline's and the digits job's).
EXPLANATION = """\
instant current: each spiking layer integrates its input step by step, as it arrives.
expected current: it integrates its input's mean over the T steps (eq. 9), what the ANN sees.
T = L is special: an ANN activation is one of the levels M = 0..L, and in T = L steps an IF
  neuron fires N = 0..L spikes; with the matched V0 and the expected current N = M for every
  neuron, so the SNN computes exactly the ANN. At other T it only approximates it.
N != M counts the neurons (all QuantReLU layers, every report sample) whose spike count N at
  T = L differs from their ANN level M; "of" is neurons per sample x samples."""


def format_epoch(row: dict, epochs: int) -> str:
    """One short terminal line for a ``log.jsonl`` row (``epoch``, ``train_loss``, ...)."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.3f}"]
    if row.get("train_acc") is not None:
        parts.append(f"train {100 * row['train_acc']:.1f}%")
    if row.get("test_acc") is not None:
        parts.append(f"test {100 * row['test_acc']:.1f}%")
    parts += [f"lr {row['lr']:.3g}", f"{row['seconds']:.1f} s"]
    return "  ".join(parts)


def format_summary(res: dict) -> str:
    """The DVS pipeline's results table (``res`` as in ``results.json``) and its explanation."""
    L = res["levels"]
    Ts = sorted(int(T) for T in res["snn_accuracy"]["expected"])
    lines = [f"{res['dataset']}{' (synthetic)' if res['synthetic'] else ''}: {res['arch']}, "
             f"L = {L}, --input {res.get('input', 'mean')}, {res['test_samples']} test samples",
             f"ANN accuracy            {100 * res['ann_accuracy']:6.2f}%"]
    lines += [f"  on {pair} alone: {100 * acc:.1f}%"
              for pair, acc in res.get("pair_accuracy", {}).items()]
    lines.append("SNN accuracy       " + "".join(f"{'T=' + str(T):>9}" for T in Ts))
    for c, label in ROWS:
        if c in res["snn_accuracy"]:
            lines.append(f"  {label:<17}" + "".join(
                f"{100 * res['snn_accuracy'][c][str(T)]:8.2f}%" for T in Ts))
    lines.append(f"neurons with N != M at T = {res.get('time_steps', res['frames'])} (expected, "
                 "float64): "
                 f"{res['mismatched_neurons']} of {res['report_neurons']} (float32: "
                 f"{res['mismatched_neurons_float32']}, from the order of additions)")
    e = res["energy"]["expected"]
    lines.append(format_energy(e))
    extra = [text for key, text in ((CALIBRATED, CALIBRATED_EXPLANATION),
                                    (FINETUNED, FINETUNED_EXPLANATION))
             if key in res["snn_accuracy"]]
    return "\n".join(lines + [EXPLANATION] + extra)


def format_written(paths: Iterable[Path]) -> str:
    """``written:`` and one indented line per file that exists, in the order given."""
    present = [Path(p) for p in paths if Path(p).exists()]
    if not present:
        return "written: nothing"
    return "\n".join(["written:"] + [f"  {p}" for p in present])
