"""examples/cifar end to end on tiny CIFAR releases in torchvision's real pickled layout."""
import json

import pytest
import torch

from sj_qvm.app.run_folder import RUN_FILES
from sj_qvm.app.static import CIFAR10_SPEC, CIFAR100_SPEC, main
from test_datasets_cifar import write_cifar10, write_cifar100

pytest.importorskip("matplotlib")
SPECS = (CIFAR100_SPEC, CIFAR10_SPEC)
PROG = "examples/cifar/train.py"


def _run(argv, capsys):
    rc = main(SPECS, argv, prog=PROG)
    out, err = capsys.readouterr()
    return rc, out, err


def _quick(root, out, *extra):
    return ["--root", str(root), "--out", str(out), "--epochs", "1", "--batch-size", "16",
            "--workers", "0", "--levels", "2", "--eval-time-steps", "1", "2", "--quiet",
            *extra]


def test_cifar10_end_to_end_is_exact_then_resumes(tmp_path, capsys):
    write_cifar10(tmp_path / "data", n=8)  # 40 training, 8 test images
    out = tmp_path / "run"
    argv = _quick(tmp_path / "data", out, "--dataset", "cifar10", "--arch", "resnet20",
                  "--width", "4")
    rc, stdout, err = _run(argv, capsys)
    assert rc == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "cifar10" and res["test_samples"] == 8 and res["levels"] == 2
    # Theorem 3: expected current, matched V0, T = L: every neuron fires N == M, equal accuracy.
    assert res["mismatched_neurons"] == 0 and res["report_neurons"] > 0
    assert res["snn_accuracy"]["expected"]["2"] == res["ann_accuracy"]
    assert set(res["v0_ablation"]["instant"]) == {"floor", "round", "ceil"}
    assert set(res["v0_ablation"]["expected"]["ceil"]) == {"1", "2"}
    tables = (out / "tables.md").read_text()
    assert "Table 2 layout" in tables and "Table 4 layout" in tables and "| θ/2 |" in tables
    for png in ("accuracy_vs_T.png", "v0_ablation.png", "conversion_report.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "exact: SNN accuracy at T = L = 2" in stdout and str(out / "tables.md") in stdout
    assert len((out / "log.jsonl").read_text().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES["static"])  # its whole list

    # A fresh run into the same folder is refused; --resume continues after epoch 1.
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and "already holds a run" in err and len(err.strip().splitlines()) == 1
    argv2 = [a if a != "1" or i != argv.index("--epochs") + 1 else "2" for i, a in enumerate(argv)]
    rc, stdout, err = _run(argv2 + ["--resume"], capsys)
    assert rc == 0, err
    assert "resumed from" in stdout and "after epoch 1" in stdout
    rows = [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    # A resume with other model flags is refused, naming the flag, and loses nothing.
    before = (out / "checkpoint.pt").read_bytes()
    rc, _, err = _run(argv2 + ["--resume", "--width", "8"], capsys)
    assert rc == 2 and "--width 4" in err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_cifar100_vgg16_maxpool_floor_is_exact(tmp_path, capsys):
    write_cifar100(tmp_path / "data", n=12)
    out = tmp_path / "run"
    rc, _, err = _run(_quick(tmp_path / "data", out, "--arch", "vgg16", "--width", "1",
                             "--pool", "max", "--rounding", "floor", "--no-v0-ablation"), capsys)
    assert rc == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "cifar100" and res["rounding"] == "floor"
    assert res["mismatched_neurons"] == 0
    assert res["snn_accuracy"]["expected"]["2"] == res["ann_accuracy"]
    assert list(res["v0_ablation"]["expected"]) == ["floor"]
    assert "Table 4" not in (out / "tables.md").read_text()


def test_corrupt_batch_is_named(tmp_path, capsys):
    write_cifar10(tmp_path / "data", n=4)
    bad = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(ValueError, match="data_batch_3"):
        CIFAR10_SPEC.make(tmp_path / "data", True, None)
    out = tmp_path / "run"
    rc, _, err = _run(_quick(tmp_path / "data", out, "--dataset", "cifar10"), capsys)
    assert rc == 2 and str(bad) in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # the data are read before anything is written


def test_missing_root_shows_layout_and_source(tmp_path, capsys):
    rc, _, err = _run(_quick(tmp_path / "nothing", tmp_path / "run"), capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "cifar-100-python" in err and "https://www.cs.toronto.edu/~kriz/" in err


def test_wrong_v0_breaks_exactness():
    """The converse of Theorem 3 on the pipeline's nets: a mismatched V0 gives N != M."""
    from sj_qvm import convert
    from sj_qvm.app.static.sweep import set_v0
    from sj_qvm.image_models import resnet20
    from sj_qvm.levels import compare_levels
    torch.manual_seed(0)
    ann = resnet20(num_classes=10, levels=4, rounding="round", width=4, threshold=1.0).eval()
    ann = ann.double()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    snn = convert(ann, time_steps=4, current="expected")
    mismatched = {}
    for v0 in ("floor", "round", "ceil"):
        set_v0(snn, v0)
        mismatched[v0] = sum(r.mismatched for r in compare_levels(ann, snn, x))
    assert mismatched["round"] == 0
    assert mismatched["floor"] > 0 and mismatched["ceil"] > 0


def test_torchrun_two_gloo_processes(tmp_path):
    """``torchrun --nproc_per_node=2`` on the CPU (gloo): DDP training runs to the end, only
    rank 0 writes, and the SNN is still exact at T = L."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    write_cifar10(tmp_path / "data", n=8)
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(repo / PROG)] + _quick(tmp_path / "data", out, "--dataset", "cifar10",
                                      "--arch", "resnet20", "--width", "4")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len((out / "log.jsonl").read_text().splitlines()) == 1  # only rank 0 writes
    res = json.loads((out / "results.json").read_text())
    assert res["mismatched_neurons"] == 0
    assert res["snn_accuracy"]["expected"]["2"] == res["ann_accuracy"]
