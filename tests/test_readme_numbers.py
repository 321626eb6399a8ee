"""The numbers the example READMEs quote are what the current code produces (on request: slow).

``SJ_QVM_SLOW=1 python -m pytest -q -m slow tests/test_readme_numbers.py`` reruns the commands
that ``examples/dvs_gesture/README.md`` and ``examples/cifar10_dvs/README.md`` give for their
tables (seed 0) and checks the READMEs' "after" SNN rows against each run's ``results.json``, to
the READMEs' one decimal, the emulated-digits demo's table (README.md and the CIFAR10-DVS
example's) against ``sj-qvm demo``, and README.md's float16 / bfloat16 counts against
``benchmarks/low_precision_counts.py``. It takes three to five minutes on 2 cores. Training is
deterministic for a given torch build and thread count; on another machine a last-digit
difference means "rerun and update the README".
"""
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _row(readme: str, label: str) -> list:
    m = re.search(rf"^\| {re.escape(label)} \|(.*)\|$", readme, re.M)
    assert m, f"no row {label!r} in the README"
    return [float(v) for v in m.group(1).split("|")]


def _check_quoted(example: str, out: Path) -> None:
    """The example README's "after, <current> current" rows equal the run's SNN accuracy."""
    res = json.loads((out / "results.json").read_text())
    readme = (ROOT / "examples" / example / "README.md").read_text()
    for current in ("expected", "instant"):
        quoted = _row(readme, f"after, {current} current")
        ran = [round(100 * res["snn_accuracy"][current][T], 1) for T in ("1", "2", "4", "8", "16")]
        assert quoted == ran, f"{example}, {current}: README {quoted}, this code {ran}"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SJ_QVM_SLOW") != "1", reason="slow: set SJ_QVM_SLOW=1 to run")
def test_dvs_gesture_readme_quotes_the_demo(tmp_path, capsys):
    from sj_qvm.app.cli import main
    out = tmp_path / "demo_s0"
    assert main(["demo", "--gesture", "--out", str(out), "--seed", "0", "--quiet",
                 "--cache-dir", str(tmp_path / "synthetic")]) == 0
    _check_quoted("dvs_gesture", out)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SJ_QVM_SLOW") != "1", reason="slow: set SJ_QVM_SLOW=1 to run")
def test_demo_tables_quote_the_demo(tmp_path, capsys):
    """README.md's and the CIFAR10-DVS example's tables of ``sj-qvm demo`` (the emulated digits,
    with its instant-current fine-tune) against the demo itself."""
    from sj_qvm.app.cli import main
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seed", "0", "--quiet",
                 "--cache-dir", str(tmp_path / "synthetic")]) == 0
    res = json.loads((out / "results.json").read_text())
    ran = lambda key: [round(100 * res["snn_accuracy"][key][T], 1) for T in ("1", "2", "4", "8", "16")]
    for readme in (ROOT / "README.md", ROOT / "examples" / "cifar10_dvs" / "README.md"):
        text = readme.read_text()
        assert _row(text, "SNN, expected current") == ran("expected"), readme
        assert _row(text, "SNN, instant current, fine-tuned, delayed readout") == \
            ran("instant_finetuned"), readme
    assert _row((ROOT / "README.md").read_text(), "SNN, instant current") == ran("instant")
    assert _row((ROOT / "examples" / "cifar10_dvs" / "README.md").read_text(),
                "SNN, instant current (one frame per step)") == ran("instant")


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SJ_QVM_SLOW") != "1", reason="slow: set SJ_QVM_SLOW=1 to run")
def test_cifar10_dvs_readme_quotes_its_run(tmp_path, capsys):
    """``examples/cifar10_dvs/README.md``'s seed 0 "after" rows against the command it gives."""
    from sj_qvm.app.pipeline import CIFAR10_DVS, main
    out = tmp_path / "cifar_s0"
    argv = ["--arch", "vgg", "--width", "8", "--size", "64", "--optimizer", "adam", "--lr", "0.003",
            "--epochs", "12", "--seed", "0", "--out", str(out), "--cache-dir",
            str(tmp_path / "synthetic"), "--quiet"]
    assert main(CIFAR10_DVS, argv) == 0
    _check_quoted("cifar10_dvs", out)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SJ_QVM_SLOW") != "1", reason="slow: set SJ_QVM_SLOW=1 to run")
def test_readme_quotes_the_float16_and_bfloat16_counts():
    """README.md's per-thousand figures for float16 / bfloat16 (default schedule) against
    ``benchmarks/low_precision_counts.py`` (about 1.5 CPU-minutes)."""
    import sys
    import torch
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from low_precision_counts import measure
    total, tally = measure("per_sample")
    per_k = {d: [f"{1000 * n / total:.2g}" for n in tally[d][:2]]
             for d in (torch.float16, torch.bfloat16)}
    readme = " ".join((ROOT / "README.md").read_text().split())
    quoted = (f"N != M for {per_k[torch.float16][0]} (float16) and {per_k[torch.bfloat16][0]} "
              f"(bfloat16) neurons per thousand, and N differs from the float32 SNN's count for "
              f"{per_k[torch.float16][1]} and {per_k[torch.bfloat16][1]} per thousand")
    assert quoted in readme
    assert tally[torch.float32][0] == 4    # the float32 figure the README quotes beside them
