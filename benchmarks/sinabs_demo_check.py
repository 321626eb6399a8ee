"""A trained DVS run exported to sinabs: does sinabs's simulation at T = L equal the quantized ANN?

``python benchmarks/sinabs_demo_check.py RUN_DIR`` (a run folder of ``sj-qvm demo`` or
``examples/dvs_gesture/train.py``: its ``checkpoint.pt`` and ``results.json``; needs the sinabs
extra). Rebuilds the run's ANN, converts it per step in both currents, exports each with
:func:`sj_qvm.export.to_sinabs` and runs the run's test split through the ANN, the QVM SNN and
the sinabs network in float64 at T = L. Prints the three accuracies, how many test samples the
sinabs network predicts differently from the ANN, and the spike mismatches against the QVM SNN.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sj_qvm import _compat
from sj_qvm.app.checkpoint import load_checkpoint
from sj_qvm.app.registry import CIFAR10_DVS, DVS_GESTURE, EMULATED_DIGITS
from sj_qvm.convert import convert
from sj_qvm.datasets.frames_dataset import Frames
from sj_qvm.datasets.representations import representation
from sj_qvm.export import to_sinabs
from sj_qvm.models import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="the run folder")
    a = p.parse_args()
    import sinabs
    args = load_checkpoint(a.run / "checkpoint.pt")
    state, cfg = args["model"], args["args"]
    res = json.loads((a.run / "results.json").read_text())
    spec = {s.name: s for s in (DVS_GESTURE, CIFAR10_DVS, EMULATED_DIGITS)}[res["dataset"]]
    rep, L = representation(cfg["input"]), cfg["levels"]
    ann = build_model(cfg["arch"], in_channels=rep.channels(cfg["frames"]),
                      num_classes=spec.num_classes, levels=L, rounding=cfg["rounding"],
                      width=cfg["width"], channel_wise=not cfg["layer_thresholds"])
    ann.load_state_dict(state)
    ann = ann.double().eval()
    root = Path(cfg["root"])
    test = Frames(spec.make(root, False, cfg["frames"]), cfg["size"])
    loader = torch.utils.data.DataLoader(test, batch_size=16)
    for current in ("instant", "expected"):
        snn = convert(ann, time_steps=L, current=current, schedule="per_step", warn=False)
        net = to_sinabs(snn, input_shape=(rep.channels(cfg["frames"]), cfg["size"], cfg["size"]))
        n = ok_ann = ok_snn = ok_sin = differ = bad_out = 0
        with torch.no_grad():
            for frames, y in loader:
                frames = frames.double()
                x_seq = rep.snn_input(frames, None if rep.streams else L).contiguous()
                pred_ann = ann(rep(frames)).argmax(1)
                _compat.reset_net(snn)
                out_snn = snn(x_seq)  # [T, B, classes]
                sinabs.reset_states(net)
                out_sin = net(x_seq.transpose(0, 1).flatten(0, 1))
                out_sin = out_sin.reshape(x_seq.shape[1], L, -1).transpose(0, 1)
                bad_out += int((out_sin != out_snn).any(-1).sum())
                pred_sin = out_sin.mean(0).argmax(1)
                n += len(y)
                ok_ann += int((pred_ann == y).sum())
                ok_snn += int((out_snn.mean(0).argmax(1) == y).sum())
                ok_sin += int((pred_sin == y).sum())
                differ += int((pred_sin != pred_ann).sum())
        print(f"{current:8} T = L = {L}, {n} test samples: ANN {100 * ok_ann / n:.2f}%, "
              f"QVM SNN {100 * ok_snn / n:.2f}%, sinabs {100 * ok_sin / n:.2f}%; "
              f"sinabs predicts differently from the ANN on {differ}; "
              f"(step, sample) outputs differing from the QVM SNN: {bad_out}")


if __name__ == "__main__":
    main()
