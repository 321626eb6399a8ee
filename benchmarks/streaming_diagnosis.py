"""Why the instant current loses accuracy on event frames: measured on a finished DVS pipeline run.

For each T it streams the run's test set (events integrated into T frames, scaled by T / frames as
the pipeline does) and reports:

* accuracy: instant, expected, instant with only the first spiking layer in the instant current
  (the rest expected), the reverse, and the instant current with the first layer's V0 fitted
  (:func:`sj_qvm.streaming.calibrate_instant`, on 64 training sequences at that T);
* the first layer's current ``q_t = W x_t + b`` per neuron: the share of neurons whose current
  changes sign over the T steps, and the mean |q_t| / theta;
* the first layer's spike counts, instant N vs expected M: the share of neurons with N > M and
  N < M, and the mean excess theta / T * (N - M) in the ANN's units;
* the per-layer unevenness error of the instant current (``sj_qvm.analysis.conversion_report``,
  64 test samples).

    python benchmarks/streaming_diagnosis.py runs/demo dvs_gesture [--png benchmarks/x.png]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sj_qvm import _compat, analysis, convert
from sj_qvm.app import registry
from sj_qvm.app.checkpoint import load_checkpoint
from sj_qvm.app.streaming import calibration_sequences
from sj_qvm.datasets.frames_dataset import Frames, to_time_major
from sj_qvm.models import build_model
from sj_qvm.quant import channel_view
from sj_qvm.streaming import calibrate_instant

TS = (1, 2, 4, 8, 16)


def load_run(run: Path, spec):
    ck = load_checkpoint(run / "checkpoint.pt")
    a = ck["args"]
    model = build_model(a["arch"], in_channels=2, num_classes=spec.num_classes,
                        levels=a["levels"], rounding=a["rounding"], width=a["width"],
                        channel_wise=not a["layer_thresholds"])
    model.load_state_dict(ck["model"])
    return model.eval(), a


def test_set(spec, a, T):
    ds = Frames(spec.make(Path(a["root"]), False, T), a["size"], scale=T / a["frames"])
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    return to_time_major(x), torch.tensor([ds[i][1] for i in range(len(ds))])


def first_layer(snn, x_seq, current):
    """(input current [T, B, C, *], spike counts [B, C, *]) of the first spiking layer."""
    act = snn.spiking_layers()[0][1]
    act.node.current = current
    seen = {}
    h1 = act.register_forward_hook(lambda m, i, o: seen.setdefault("q", i[0]))
    h2 = act.node.register_forward_hook(lambda m, i, o: seen.setdefault("s", o))
    with torch.no_grad():
        _compat.reset_net(snn)
        snn(x_seq)
    h1.remove()
    h2.remove()
    T = x_seq.shape[0]
    return seen["q"].reshape(T, -1, *seen["q"].shape[1:]), seen["s"].sum(0)


def accuracy(snn, x_seq, y, currents=None):
    if currents is not None:
        for (_, act), c in zip(snn.spiking_layers(), currents):
            act.node.current = c
    with torch.no_grad():
        _compat.reset_net(snn)
        out = snn(x_seq).mean(0)
    return 100 * (out.argmax(1) == y).float().mean().item()


def diagnose(run: Path, spec) -> dict:
    ann, a = load_run(run, spec)
    x4, y = test_set(spec, a, a["frames"])
    ann_acc = 100 * (ann(x4.mean(0)).argmax(1) == y).float().mean().item()
    rows = []
    for T in TS:
        x, y = test_set(spec, a, T)
        snn = lambda current="instant": convert(ann, time_steps=T, current=current, warn=False)
        n = len(snn().spiking_layers())
        r = {"T": T, "instant": accuracy(snn(), x, y), "expected": accuracy(snn("expected"), x, y),
             "first_instant_only": accuracy(snn(), x, y, ["instant"] + ["expected"] * (n - 1)),
             "first_expected_only": accuracy(snn(), x, y, ["expected"] + ["instant"] * (n - 1))}
        fitted = calibrate_instant(snn(), calibration_sequences(
            spec, Path(a["root"]), T, a["frames"], a["size"], a["seed"]))
        r["instant_v0_fit"] = accuracy(fitted, x, y)
        q, N = first_layer(snn(), x, "instant")
        _, M = first_layer(snn(), x, "expected")
        theta = channel_view(torch.as_tensor(snn().spiking_layers()[0][1].node.v_threshold), 4)
        r["sign_change"] = ((q > 0).any(0) & (q < 0).any(0)).float().mean().item()
        r["mean_abs_q_over_theta"] = (q / theta).abs().mean().item()
        r["over"], r["under"] = (N > M).float().mean().item(), (N < M).float().mean().item()
        r["excess"] = (theta / T * (N - M)).mean().item()
        r["mean_activation"] = (theta / T * M).mean().item()
        rep = analysis.conversion_report(ann, snn("expected"), x[:, :64], sequence=True)
        r["unevenness_instant"] = [round(l.unevenness_error, 4)
                                   for l in rep.rows_by_current["instant"]]
        rows.append(r)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}),
              flush=True)
    return {"run": str(run), "dataset": spec.name, "ann": ann_acc, "test_samples": len(y),
            "rows": rows}


def plot(results, path: Path) -> None:
    from sj_qvm.plots import pyplot
    plt = pyplot()
    fig, axes = plt.subplots(1, len(results) + 1, figsize=(4.2 * (len(results) + 1), 3.4), dpi=150)
    for ax, res in zip(axes, results):
        for key, label in (("instant", "instant"), ("expected", "expected"),
                           ("first_expected_only", "first layer expected, rest instant"),
                           ("first_instant_only", "first layer instant, rest expected"),
                           ("instant_v0_fit", "instant, first layer's V0 fitted")):
            ax.plot(TS, [r[key] for r in res["rows"]], marker="o", ms=3, label=label)
        ax.axhline(res["ann"], color="grey", ls="--", lw=1, label="ANN")
        ax.set_xscale("log", base=2)
        ax.set_xticks(TS, [str(T) for T in TS])
        ax.set_ylim(0, 100)
        ax.set_xlabel("time-steps T (frames streamed)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{res['dataset']} ({res['test_samples']} test samples)", fontsize=9)
        ax.legend(fontsize=5, loc="lower left")
    ax = axes[-1]
    for res in results:
        ax.plot(TS, [100 * r["over"] for r in res["rows"]], marker="o", ms=3,
                label=f"{res['dataset']}: N > M")
        ax.plot(TS, [100 * r["under"] for r in res["rows"]], marker="s", ms=3, ls=":",
                label=f"{res['dataset']}: N < M")
    ax.set_xscale("log", base=2)
    ax.set_xticks(TS, [str(T) for T in TS])
    ax.set_xlabel("time-steps T")
    ax.set_ylabel("first-layer neurons (%)")
    ax.set_title("first layer, instant N vs expected M", fontsize=9)
    ax.legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", help="RUN_DIR DATASET pairs (dvs_gesture, cifar10_dvs)")
    p.add_argument("--png", type=Path, help="write the figure here")
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args(argv)
    if len(args.runs) % 2:
        p.error("runs come in RUN_DIR DATASET pairs")
    specs = {s.name: s for s in (registry.DVS_GESTURE, registry.CIFAR10_DVS)}
    results = [diagnose(Path(run), specs[name])
               for run, name in zip(args.runs[::2], args.runs[1::2])]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.png:
        plot(results, args.png)


if __name__ == "__main__":
    main()
