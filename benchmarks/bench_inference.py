"""Converted-SNN inference against the ANN, the QAT ANN and SpikingJelly's converted SNN (issue 15).

    python benchmarks/bench_inference.py [--rounds 7] [--quick] [--plot benchmarks/inference_growth.png]
    python benchmarks/bench_inference.py --models resnet18 --quick     # the DVS resnet18 rows

Runs itself twice, with the default glibc allocator and with
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000`` (fresh >= 32 MiB allocations are slow
page faults on some VMs; this is close to a caching allocator), and prints for each:

* per model and T: the median time of every case, timed interleaved in one process, as a
  multiple of the plain ANN's (ReLU) and of the QAT ANN's (QuantReLU, eval), and SJ / ours;
* a QAT training step (DVS ``vgg``, batch 16, 64x64) with QuantReLU against its ReLU twin;
* peak extra resident memory of one expected-mode forward, per schedule (fresh processes);
* cost growth: time against T in {1, 2, 4, 8, 16, 32} and batch size, both currents (and a plot).

Models: SpikingJelly's sample MNIST CNN (28x28, calibrated to QuantReLU by ``sj_qvm.quantize``)
and sj_qvm.models' DVS ``vgg`` at the demo's settings (width 8, 2x64x64, L = 4); with
``--models ... resnet18`` also sj_qvm.models' DVS ``resnet18`` (width 16, 2x64x64, L = 4).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import sj_qvm  # noqa: E402
from sj_qvm import QuantReLU, convert  # noqa: E402
from sj_qvm._compat import SJ_VERSION, functional, sample_models, sj_convert  # noqa: E402
from sj_qvm.models import ResNet18, vgg  # noqa: E402
from sj_qvm.ops import native  # noqa: E402
from sj_qvm.ops.quant_relu import quant_relu_ref  # noqa: E402
from harness import ALLOCATORS, NO_MMAP, interleaved, run_children  # noqa: E402,F401

L = 4


class SteChainQuantReLU(QuantReLU):
    """QuantReLU as it was before the fused paths (the autograd-op STE chain), for comparison."""

    def forward(self, x):
        return quant_relu_ref(x, self.gamma(x.ndim), self.levels, self.rounding)


def relu_twin(model: nn.Module) -> nn.Module:
    """A copy with every QuantReLU replaced by nn.ReLU (or by ``cls`` of the same settings)."""
    return swap_activations(model, lambda m: nn.ReLU())


def swap_activations(model: nn.Module, make) -> nn.Module:
    import copy
    out = copy.deepcopy(model)
    for name, m in list(out.named_modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, QuantReLU):
                setattr(m, child_name, make(child))
    return out


MODELS = ("mnist_cnn", "vgg", "resnet18")


def models(batch: int, names=MODELS[:2]):
    """``{name: (relu_ann, qat_ann, input [B, *])}``, eval mode, float32, for ``names`` in
    :data:`MODELS`."""
    torch.manual_seed(0)
    out = {}
    if "mnist_cnn" in names:
        cnn = sample_models()["mnist_cnn"]().eval()
        x = torch.rand(batch, 1, 28, 28)
        calib = [(torch.rand(64, 1, 28, 28), torch.zeros(64, dtype=torch.long)) for _ in range(2)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["SJ sample MNIST CNN"] = (cnn, sj_qvm.quantize(cnn, levels=L, dataloader=calib,
                                                               rounding="round").eval(), x)
    if "vgg" in names:
        net = vgg(levels=L, width=8).eval()
        x = torch.rand(batch, 2, 64, 64) * 2
        out["DVS vgg (demo: width 8, 64x64)"] = (relu_twin(net).eval(), net, x)
    if "resnet18" in names:
        net = ResNet18(levels=L, width=16).eval()
        x = torch.rand(batch, 2, 64, 64) * 2
        out["DVS resnet18 (width 16, 64x64)"] = (relu_twin(net).eval(), net, x)
    return out


def cases_for(relu_ann, qat_ann, x, T, data):
    """``{case: callable}`` for one model at T."""
    x_seq = x.unsqueeze(0).expand(T, *x.shape).contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sj_snn = sj_convert(relu_ann, data, mode="99.9%").eval()
        snns = {"sj_qvm expected (per_sample)": convert(qat_ann, T, warn=False),
                "sj_qvm expected (per_step)": convert(qat_ann, T, warn=False, schedule="per_step"),
                "sj_qvm instant": convert(qat_ann, T, "instant", warn=False),
                "sj_qvm instant (theta unfolded)": convert(qat_ann, T, "instant", warn=False,
                                                           fold_theta=False)}
    ste_ann = swap_activations(qat_ann, lambda m: _ste_copy(m)).eval()

    def sj_run():
        functional.reset_net(sj_snn)
        out = 0
        for t in range(T):
            out = out + sj_snn(x)
        return out

    def ours(snn):
        def run():
            functional.reset_net(snn)
            return snn(x_seq)
        return run

    cases = {"ANN (ReLU)": lambda: relu_ann(x), "QAT ANN (QuantReLU)": lambda: qat_ann(x),
             "QAT ANN (STE chain, before)": lambda: ste_ann(x),
             "SJ RateCoding SNN (T single steps)": sj_run}
    cases.update({k: ours(v) for k, v in snns.items()})
    return cases


def _ste_copy(m: QuantReLU) -> QuantReLU:
    c = SteChainQuantReLU(m.levels, m.rounding, m.threshold.detach().clone())
    return c


def train_step_times(rounds: int) -> dict:
    """The QAT training step of the DVS ``vgg`` and its ReLU twin (``bench_quant``'s cases)."""
    from bench_quant import train_cases  # noqa: PLC0415 -- bench_quant imports this module
    return interleaved(train_cases(), rounds, grad=True)

def growth(rounds: int) -> dict:
    """``{"current B": {T: seconds}}`` for the DVS vgg."""
    torch.manual_seed(0)
    net = vgg(levels=L, width=8).eval()
    out = {}
    for B in (16, 64):
        x = torch.rand(B, 2, 64, 64) * 2
        cases = {}
        for T in (1, 2, 4, 8, 16, 32):
            x_seq = x.unsqueeze(0).expand(T, *x.shape).contiguous()
            for current in ("expected", "instant"):
                snn = convert(net, T, current, warn=False)
                cases[(current, B, T)] = (lambda s, xs: lambda: (functional.reset_net(s),
                                                                 s(xs)))(snn, x_seq)
            cases[("ANN", B, T)] = (lambda: net(x))
        med = interleaved(cases, rounds)
        for (current, B_, T), v in med.items():
            out.setdefault(f"{current} B={B_}", {})[T] = v
    return out


def peak_child(schedule: str, T: int) -> None:
    """Print the extra peak RSS (MiB) of one expected-mode forward of the vgg at batch 64."""
    torch.manual_seed(0)
    net = vgg(levels=L, width=8).eval()
    snn = convert(net, T, warn=False, schedule=schedule)
    x_seq = (torch.rand(64, 2, 64, 64) * 2).unsqueeze(0).expand(T, 64, 2, 64, 64).contiguous()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        snn(x_seq)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mib": (after - before) / 1024}))


def child(args) -> None:
    torch.set_num_threads(args.threads)
    results = {"models": {}, "machine": machine()}
    for T in (4, 16):
        for name, (relu_ann, qat_ann, x) in models(args.batch, args.models).items():
            data = [(x, torch.zeros(x.shape[0], dtype=torch.long))]
            med = interleaved(cases_for(relu_ann, qat_ann, x, T, data), args.rounds)
            results["models"][f"{name}, T={T}"] = med
    results["train"] = train_step_times(args.rounds)
    if not args.quick:
        results["growth"] = growth(max(3, args.rounds // 2))
    print("JSON " + json.dumps(results))


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), spikingjelly "
            f"{SJ_VERSION}, native kernels {'on' if native.available() else 'off'}, load "
            f"{os.getloadavg()[0]:.1f}")


def report(label: str, res: dict) -> None:
    print(f"\n=== {label} ({res['machine']})")
    for model, med in res["models"].items():
        ann, qat = med["ANN (ReLU)"], med["QAT ANN (QuantReLU)"]
        sj = med["SJ RateCoding SNN (T single steps)"]
        print(f"\n{model}")
        print(f"{'case':<38}{'ms':>9}{'x ANN':>8}{'x QAT':>8}{'SJ/this':>9}")
        for k, v in med.items():
            print(f"{k:<38}{1e3 * v:9.2f}{v / ann:8.2f}{v / qat:8.2f}{sj / v:9.2f}")
    tr = res["train"]
    print("\nQAT training step, DVS vgg, batch 16, 64x64 (x the ReLU twin's):")
    for k, v in tr.items():
        print(f"  {k:<32}{1e3 * v:9.2f} ms {v / tr['ReLU twin']:6.2f}x")
    if "growth" in res:
        print("\nCost growth, DVS vgg (ms; T across):")
        for k, row in res["growth"].items():
            print(f"  {k:<16}" + "".join(f"{'T=' + str(T):>10}" for T in row))
            break
        for k, row in res["growth"].items():
            print(f"  {k:<16}" + "".join(f"{1e3 * v:10.1f}" for v in row.values()))


def plot(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for k, row in res["growth"].items():
        Ts = [int(t) for t in row]
        ax.plot(Ts, [1e3 * v for v in row.values()], marker="o", label=k)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("time steps T")
    ax.set_ylabel("ms per batch")
    ax.set_title("DVS vgg inference, 2-core CPU", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--quick", action="store_true", help="skip the growth table")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS[:2]),
                   help="the models of the main table (default: mnist_cnn vgg)")
    p.add_argument("--plot", default=None, help="PNG path for the growth plot")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--peak", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.peak:
        return peak_child(*args.peak.split(":")[0:1], int(args.peak.split(":")[1]))
    if args.child:
        return child(args)
    me = [sys.executable, os.path.abspath(__file__)]
    flags = ["--rounds", str(args.rounds), "--batch", str(args.batch), "--threads",
             str(args.threads), "--models", *args.models] + (["--quick"] if args.quick else [])
    all_res = run_children(__file__, flags)
    for label, res in all_res.items():
        report(label, res)
        if args.plot and "growth" in res and label == ALLOCATORS[0][0]:
            plot(res, args.plot)
    print("\nPeak extra RSS of one expected-mode forward, DVS vgg, batch 64 (default allocator):")
    for T in (4, 16):
        for schedule in ("per_sample", "per_step"):
            out = subprocess.run(me + ["--peak", f"{schedule}:{T}"], capture_output=True,
                                 text=True, check=True).stdout
            mib = json.loads(out.strip().splitlines()[-1])["peak_mib"]
            all_res.setdefault("peak", {})[f"{schedule} T={T}"] = mib
            print(f"  T={T:<3} {schedule:<11}{mib:8.1f} MiB")
    print("\nJSON " + json.dumps(all_res))


if __name__ == "__main__":
    main()
