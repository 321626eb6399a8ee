"""Accuracy of post-training conversion routes, side by side on the same trained ANN and data.

Rows: SpikingJelly's ``RateCodingRecipe`` (per layer, 99.9%), its channel-wise variant with half
threshold, its ``LocalThresholdBalancingRecipe`` (Bu et al., CVPR 2025), and sj_qvm's
``quantize`` for each ``method`` (with and without bias correction), with and without a 1-epoch
``finetune``, in both current modes. Columns: T = 1, 2, 4, 8, 16; sj_qvm rows at L = 2, 4, 8.
``quantize()``'s defaults are per-channel MSE, layer by layer, with bias correction and
output reconstruction.
Every route calibrates on the same loader (the whole training split, as SJ's examples pass
``dataloader=train_loader``). Calibration times are measured interleaved, the median of
``--repeats`` rounds, and printed as a multiple of LTB's.

    python benchmarks/bench_conversion.py                      # digits sample CNN (two trainings)
    python benchmarks/bench_conversion.py --models dvs_vgg     # the DVS demo's vgg, synthetic data
    python benchmarks/bench_conversion.py --out runs/bench_conversion   # + table.md, PNG, JSON
    python benchmarks/bench_conversion.py --stream     # DVS frames streamed, one per step
    python benchmarks/bench_conversion.py --seeds 0 1 2 3 4 5 --levels 2 4 --no-finetune \
        --repeats 0 --routes "mse + bias correction" "mse + bias correction + reconstruction (the default)"

SJ 2.x only: 0.0.0.0.14 has neither recipes nor sample models.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import conversion_setup as setup  # noqa: E402

import sj_qvm  # noqa: E402
from sj_qvm import _compat  # noqa: E402
from sj_qvm.interop.calibration import calibrate  # noqa: E402
from sj_qvm.interop.quantize import quantize_graph  # noqa: E402

TS = (1, 2, 4, 8, 16)
LEVELS = (2, 4, 8)
ALONE = dict(bias_correction=False, reconstruct_steps=0)  # the threshold search by itself
DEFAULT = "mse + bias correction + reconstruction (the default)"
QVM_ROUTES = {  # name: (quantize() keywords, also with a 1-epoch fine-tune)
    "max": (dict(method="max", **ALONE), True),
    "percentile 99.9": (dict(method="percentile", **ALONE), True),
    "percentile 99.9, per layer, one float pass (v0.1)": (
        dict(method="percentile", channel_wise=False, sequential=False, reconstruct_steps=0),
        False),
    "mse": (dict(method="mse", **ALONE), True),
    "mse, per layer": (dict(method="mse", channel_wise=False, **ALONE), False),
    "mse + bias correction": (dict(reconstruct_steps=0), True),
    DEFAULT: (dict(), True),
}
MODELS = {
    "digits_cnn": lambda seed=0: setup.digits_sample_cnn(epochs=12, seed=seed),
    "digits_cnn_3ep": lambda seed=0: setup.digits_sample_cnn(epochs=3, seed=seed),
    "dvs_vgg": lambda seed=0: setup.dvs_vgg(seed=seed),
}


def sj_routes(calib):
    A = _compat.ann2snn
    return {
        "SJ RateCoding 99.9%": lambda: A.RateCodingRecipe(dataloader=calib, mode="99.9%"),
        "SJ RateCoding 99.9% channel-wise, half threshold": lambda: A.RateCodingRecipe(
            dataloader=calib, mode="99.9%", channel_wise=True, half_threshold=True),
        "SJ LocalThresholdBalancing": lambda: A.LocalThresholdBalancingRecipe(dataloader=calib),
    }


def run_model(name: str, repeats: int, finetune: bool, levels=LEVELS, timing_only=False,
              seed: int = 0, routes=None):
    torch.manual_seed(0)
    ann, calib, tune, x_te, y_te = MODELS[name](seed)
    rows, times = [], {}
    float_acc = setup.eval_ann(ann, x_te, y_te)
    name = name if seed == 0 else f"{name}_seed{seed}"
    print(f"\n## {name}: float ANN {float_acc:.2f}% on {len(y_te)} test samples", flush=True)
    sj = sj_routes(calib)
    if timing_only:
        levels = ()
    for route, recipe in ({} if timing_only else sj).items():
        snn = _compat.SJConverter(recipe=recipe()).convert(copy.deepcopy(ann))
        accs = {T: setup.eval_sj(snn, x_te, y_te, T) for T in TS}
        rows.append(dict(route=route, L=None, finetune=0, current="instant (SJ)", **_cols(accs)))
        _print(rows[-1])
    for L in levels:
        for route, (kw, tune_too) in QVM_ROUTES.items():
            if routes is not None and route not in routes:
                continue
            qann = sj_qvm.quantize(ann, L, dataloader=calib, progress=False, **kw)
            variants = [(0, qann)]
            if finetune and tune_too:
                # Every fine-tune reads the same shuffle: the order alone moves the accuracy.
                tune.generator.manual_seed(seed)
                tuned = sj_qvm.finetune(copy.deepcopy(qann), tune, epochs=1, progress=False,
                                        teacher=ann)  # as Converter does
                variants.append((1, tuned))
            for ft, q in variants:
                q_acc = setup.eval_ann(q, x_te, y_te)
                for current in ("expected", "instant"):
                    snn = sj_qvm.convert(q, L, current=current, warn=False)
                    accs = {T: setup.eval_qvm(snn, x_te, y_te, T) for T in TS}
                    rows.append(dict(route=f"sj_qvm {route}", L=L, finetune=ft, current=current,
                                     quantized_ann=q_acc, **_cols(accs)))
                    _print(rows[-1])
    times = time_calibration(ann, calib, sj, repeats)
    return dict(model=name, float_ann=float_acc, test_samples=len(y_te), rows=rows,
                calibration_seconds=times)


def run_streaming(seed: int = 0, L: int = 4) -> dict:
    """The DVS demo's ``vgg`` (float ReLU ANN) on the synthetic gesture release, every route
    streamed one event frame per step (``[T, N, 2, 64, 64]``, mean over T = the ANN's input):
    SJ's rate-coding (per layer; channel-wise with half threshold) and LTB recipes, and
    sj_qvm's default ``quantize`` at L in both currents, the instant one also with
    :func:`sj_qvm.streaming.calibrate_instant` (fitted on 64 training sequences at each T)."""
    import tempfile

    from sj_qvm.streaming import calibrate_instant
    root = tempfile.mkdtemp(prefix="sjqvm-bench-stream-")
    ann, calib, _, x_te, y_te = setup.dvs_vgg(seed=seed, root=root)
    seqs = {T: setup.dvs_sequences(root, False, T) for T in TS}
    fit_seqs = {T: setup.dvs_sequences(root, True, T)[:, :64] for T in TS}
    name = "dvs_vgg_streamed" + ("" if seed == 0 else f"_seed{seed}")
    float_acc = setup.eval_ann(ann, x_te, y_te)
    print(f"\n## {name}: float ANN {float_acc:.2f}% on {len(y_te)} test samples", flush=True)
    rows = []
    for route, recipe in sj_routes(calib).items():
        snn = _compat.SJConverter(recipe=recipe()).convert(copy.deepcopy(ann))
        accs = {T: setup.stream_sj(snn, seqs[T], y_te) for T in TS}
        rows.append(dict(route=route, L=None, finetune=0, current="instant (SJ)", **_cols(accs)))
        _print(rows[-1])
    q = sj_qvm.quantize(ann, L, dataloader=calib, progress=False)
    q_acc = setup.eval_ann(q, x_te, y_te)
    for current in ("expected", "instant", "instant, V0 fit"):
        accs = {}
        for T in TS:
            snn = sj_qvm.convert(q, T, current=current.split(",")[0], warn=False)
            if current == "instant, V0 fit":
                calibrate_instant(snn, fit_seqs[T])
            accs[T] = setup.stream_qvm(snn, seqs[T], y_te)
        rows.append(dict(route=f"sj_qvm {DEFAULT}", L=L, finetune=0, current=current,
                         quantized_ann=q_acc, **_cols(accs)))
        _print(rows[-1])
    return dict(model=name, float_ann=float_acc, test_samples=len(y_te), rows=rows,
                calibration_seconds={})


def _cols(accs):
    return {f"T={T}": round(a, 2) for T, a in accs.items()}


def _print(r):
    head = f"{r['route'][:52]:52s} L={r['L'] or '-'!s:2s} ft={r['finetune']} {r['current']:13s}"
    print(head + " ".join(f"{r[f'T={T}']:6.2f}" for T in TS), flush=True)


def time_calibration(ann, calib, sj, repeats: int, L: int = 4) -> dict:
    """Median seconds per calibration, every route once per round, rounds interleaved."""
    jobs = {route: (lambda r=r: _compat.SJConverter(recipe=r()).convert(copy.deepcopy(ann)))
            for route, r in sj.items()}
    for route in (DEFAULT, "mse + bias correction", "mse", "percentile 99.9"):
        kw = QVM_ROUTES[route][0]
        jobs[f"sj_qvm {route}"] = lambda kw=kw: sj_qvm.quantize(ann, L, dataloader=calib,
                                                               progress=False, **kw)
    # The default without resumed passes: every layer's pass recomputes the net from the input.
    jobs["sj_qvm default, every pass from the input (cache_bytes=0)"] = lambda: calibrate(
        quantize_graph(ann, L), calib, progress=False, cache_bytes=0)
    if repeats == 0:
        return {}
    samples = {k: [] for k in jobs}
    for _ in range(repeats):
        for k, job in jobs.items():
            t0 = time.perf_counter()
            job()
            samples[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in samples.items()}
    ltb = med["SJ LocalThresholdBalancing"]
    print("\ncalibration time (median of %d interleaved rounds), x LTB:" % repeats)
    for k, v in med.items():
        print(f"  {k:52s} {v:7.3f} s  {v / ltb:5.2f}x")
    return med


def markdown(result: dict) -> str:
    lines = [f"### {result['model']}: float ANN {result['float_ann']:.2f}% "
             f"({result['test_samples']} test samples)", "",
             "| route | L | fine-tune | current | " + " | ".join(f"T={T}" for T in TS) + " |",
             "|---|---|---|---|" + "---|" * len(TS)]
    for r in result["rows"]:
        lines.append(f"| {r['route']} | {r['L'] or '-'} | {r['finetune']} | {r['current']} | "
                     + " | ".join(f"{r[f'T={T}']:.2f}" for T in TS) + " |")
    if not result["calibration_seconds"]:
        return "\n".join(lines) + "\n"
    ltb = result["calibration_seconds"]["SJ LocalThresholdBalancing"]
    lines += ["", "| calibration (L = 4 for sj_qvm) | seconds | x LTB |", "|---|---|---|"]
    lines += [f"| {k} | {v:.3f} | {v / ltb:.2f} |" for k, v in
              result["calibration_seconds"].items()]
    return "\n".join(lines) + "\n"


def seed_summary(results, models) -> str:
    """Accuracy at T = L, mean (min-max) over the seeds: SJ's recipes at T = 2 and 4, and every
    sj_qvm route at T = L in both current modes, with and without the fine-tune."""
    lines = []
    for model in models:
        runs = [r for r in results if r["model"].split("_seed")[0] == model]
        lines += [f"### {model}: T = L, mean (min-max) over {len(runs)} seeds; float ANN "
                  f"{statistics.mean(r['float_ann'] for r in runs):.2f}", "",
                  "| route | L | fine-tune | current | accuracy at T = L |", "|---|---|---|---|---|"]
        keys = [(row["route"], row["L"], row["finetune"], row["current"])
                for row in runs[0]["rows"]]
        for route, L, ft, current in keys:
            for T in ((2, 4) if L is None else (L,)):
                accs = [row[f"T={T}"] for r in runs for row in r["rows"]
                        if (row["route"], row["L"], row["finetune"], row["current"]) ==
                        (route, L, ft, current)]
                lines.append(f"| {route} | {L or f'- (T = {T})'} | {ft} | {current} | "
                             f"{statistics.mean(accs):.2f} ({min(accs):.2f}-{max(accs):.2f}) |")
        lines.append("")
    return "\n".join(lines)


def plot_seeds(results, models, path: Path) -> None:
    """Accuracy at T = L per training seed: LTB at T = L against each sj_qvm route (no
    fine-tune, expected current), one panel per model and L."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    levels = sorted({row["L"] for r in results for row in r["rows"] if row["L"] is not None})
    fig, axes = plt.subplots(len(models), len(levels), figsize=(4.2 * len(levels),
                                                                3.2 * len(models)),
                             dpi=150, squeeze=False)
    for i, model in enumerate(models):
        runs = [r for r in results if r["model"].split("_seed")[0] == model]
        for j, L in enumerate(levels):
            ax = axes[i][j]
            series = {"SJ LocalThresholdBalancing": [
                next(row[f"T={L}"] for row in r["rows"] if row["route"] ==
                     "SJ LocalThresholdBalancing") for r in runs]}
            for r in runs:
                for row in r["rows"]:
                    if row["L"] == L and row["finetune"] == 0 and row["current"] == "expected":
                        series.setdefault(row["route"], []).append(row[f"T={L}"])
            for k, (name, accs) in enumerate(series.items()):
                ax.plot(range(len(accs)), accs, marker="os^vD"[k % 5], lw=1, label=name)
            ax.set_xticks(range(len(runs)), [str(s) for s in range(len(runs))])
            ax.set_xlabel("training seed")
            ax.set_ylabel(f"accuracy at T = L = {L} (%)")
            ax.set_title(f"{model}, L = {L}", fontsize=9)
            ax.legend(fontsize=5, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot(result: dict, path: Path, L: int = 4) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=150)
    keep = [r for r in result["rows"] if r["L"] in (None, L) and r["finetune"] == 0
            and (r["L"] is None or r["route"] in ("sj_qvm mse", f"sj_qvm {DEFAULT}"))]
    for r in keep:
        label = r["route"] + ("" if r["L"] is None else f", L={L}, {r['current']}")
        ax.plot(TS, [r[f"T={T}"] for T in TS], marker="o", label=label)
    ax.axhline(result["float_ann"], color="grey", ls="--", lw=1, label="float ANN")
    ax.axvline(L, color="red", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(TS, [str(T) for T in TS])
    ax.set_xlabel("time-steps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{result['model']}: post-training conversion, no fine-tune")
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["digits_cnn", "digits_cnn_3ep"],
                   choices=sorted(MODELS))
    p.add_argument("--repeats", type=int, default=5,
                   help="calibration timing rounds (default 5; 0: no timing)")
    p.add_argument("--routes", nargs="+", choices=sorted(QVM_ROUTES), metavar="ROUTE",
                   help="only these sj_qvm routes (default: all): " + "; ".join(QVM_ROUTES))
    p.add_argument("--levels", type=int, nargs="+", default=list(LEVELS), help="sj_qvm L values")
    p.add_argument("--no-finetune", action="store_true", help="skip the 1-epoch fine-tune rows")
    p.add_argument("--out", type=Path, help="write table.md, results.json and PNGs here")
    p.add_argument("--timing-only", action="store_true", help="only the calibration times")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="training seeds: each model is trained and compared once per seed")
    p.add_argument("--stream", action="store_true", help="instead: the DVS vgg with event frames "
                   "streamed one per step (SJ's recipes and sj_qvm side by side)")
    args = p.parse_args(argv)
    if _compat.FXConversionRecipe is None:
        sys.exit(f"bench_conversion needs SpikingJelly 2.x recipes; this is {_compat.SJ_VERSION}")
    warnings.filterwarnings("ignore", message=".*time_steps.*")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.stream:
        results = [run_streaming(seed) for seed in args.seeds]
        args.models = ["dvs_vgg_streamed"]
    else:
        results = [run_model(m, args.repeats, not args.no_finetune, tuple(args.levels),
                             args.timing_only, seed, args.routes)
                   for m in args.models for seed in args.seeds]
    text = "\n".join(markdown(r) for r in results)
    if len(args.seeds) > 1:
        text += "\n" + seed_summary(results, args.models)
    print("\n" + text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(text)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        for r in results:
            if r["rows"]:
                plot(r, args.out / f"{r['model']}_accuracy_vs_T.png")
        if len(args.seeds) > 1 and any(r["rows"] for r in results):
            plot_seeds(results, args.models, args.out / "seeds_accuracy_at_T_eq_L.png")
        print(f"wrote {args.out}/table.md, results.json and *_accuracy_vs_T.png")


if __name__ == "__main__":
    main()
