"""The DVS pipeline end to end on tiny synthetic releases: JSON + PNGs, exactness, resume, torchrun,
what it prints; and the ``sj-qvm demo`` wiring (the demo's own settings with a tiny release)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sj_qvm.app import evaluate, pipeline, pipeline_args

REPO = Path(__file__).resolve().parents[1]
TINY = ["--tiny", "--epochs", "1", "--arch", "vgg", "--width", "4", "--size", "32",
        "--batch-size", "8", "--optimizer", "adam", "--lr", "0.01", "--quiet",
        "--eval-time-steps", "1", "4"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


@pytest.mark.parametrize("spec", [pipeline.DVS_GESTURE, pipeline.CIFAR10_DVS], ids=lambda s: s.name)
def test_example_smoke_run_is_exact(spec, cache, tmp_path, capsys):
    out = tmp_path / "run"
    rc = pipeline.main(spec, TINY + ["--cache-dir", str(cache), "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["snn_accuracy"]["expected"]["4"] == res["ann_accuracy"]
    assert res["mismatched_neurons"] == 0 and res["report_neurons"] > 0
    assert set(res["snn_accuracy"]) == {"instant", "expected"}
    for png in ("accuracy_vs_T.png", "conversion_report.png", "confusion.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1]
    printed = capsys.readouterr().out
    assert "exact:" in printed
    # The terminal gets a short rounded epoch line; the full row is in log.jsonl.
    epoch_lines = [line for line in printed.splitlines() if line.startswith("epoch 1/1")]
    assert len(epoch_lines) == 1 and len(epoch_lines[0]) < 80 and "{" not in printed
    assert f"loss {log[0]['train_loss']:.3f}" in epoch_lines[0]
    assert set(log[0]) >= {"train_loss", "train_acc", "test_acc", "lr", "seconds"}
    # Where every file went, each one present.
    written = printed[printed.index("written:"):].splitlines()[1:9]
    names = ["results.json", "conversion_report.md", "conversion_report.png",
             "accuracy_vs_T.png", "confusion.png", "checkpoint.pt", "log.jsonl"]
    assert [line.strip() for line in written[:7]] == [str(out / n) for n in names]
    assert all((out / n).exists() for n in names)
    # What the table means.
    assert "\ninstant current:" in printed and "\nexpected current:" in printed
    assert "\nT = L is special" in printed
    assert "N != M counts" in printed and "neurons per sample x samples" in printed


def test_resume_after_interruption_gives_identical_weights(cache, tmp_path):
    args = TINY[:] + ["--cache-dir", str(cache), "--eval-time-steps", "4"]
    args[args.index("--epochs") + 1] = "2"
    straight = tmp_path / "straight"
    assert pipeline.main(pipeline.DVS_GESTURE, args + ["--out", str(straight)]) == 0
    # "Kill" after epoch 1: run a 2-epoch schedule, keep only the epoch-1 checkpoint.
    resumed = tmp_path / "resumed"
    first = pipeline_args.parse(pipeline.DVS_GESTURE, args + ["--out", str(resumed)])
    _train_epochs(first, 1)
    # A kill between the log append and the checkpoint rename: epoch 2 logged, not saved.
    with open(resumed / "log.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "killed": True}) + "\n")
    assert pipeline.main(pipeline.DVS_GESTURE, args + ["--out", str(resumed), "--resume"]) == 0
    logs = [[json.loads(l) for l in (d / "log.jsonl").read_text().splitlines()]
            for d in (straight, resumed)]
    assert [r["epoch"] for r in logs[1]] == [1, 2] and "killed" not in logs[1][1]
    assert [r["train_loss"] for r in logs[0]] == [r["train_loss"] for r in logs[1]]
    a = pipeline.load_checkpoint(straight / "checkpoint.pt")["model"]
    b = pipeline.load_checkpoint(resumed / "checkpoint.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train_epochs(args, stop_after):
    """Run the training loop of a longer schedule but stop after ``stop_after`` epochs."""
    real_save = pipeline.save_checkpoint
    calls = []

    def save_then_stop(obj, path):
        real_save(obj, path)
        calls.append(obj["epoch"])
        if len(calls) == stop_after:
            raise KeyboardInterrupt
    pipeline.save_checkpoint = save_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(args, pipeline.DVS_GESTURE)
    finally:
        pipeline.save_checkpoint = real_save


def test_corrupt_checkpoint_is_reported_and_kept(cache, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    bad = b"this is not a checkpoint"
    (out / "checkpoint.pt").write_bytes(bad)
    syn = tmp_path / "syn"
    rc = pipeline.main(pipeline.DVS_GESTURE, TINY + ["--cache-dir", str(syn), "--out", str(out),
                                                     "--resume"])
    assert rc == 2
    assert "cannot be verified" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == bad
    assert not syn.exists()  # refused before any data was written or read
    with pytest.raises(pipeline.CheckpointError, match="left untouched"):
        pipeline.load_checkpoint(out / "checkpoint.pt")


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling runs exec, which writes the marker
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_crafted_pickle_in_out_does_not_run_on_resume(cache, tmp_path, capsys):
    import hashlib
    out, marker = tmp_path / "run", tmp_path / "marker"
    out.mkdir()
    torch.save({"format": "sj-qvm-training-checkpoint", "version": 1, "epoch": 0, "model": {},
                "optimizer": {}, "scheduler": {}, "args": {"x": _Payload(marker)}},
               out / "checkpoint.pt")
    digest = hashlib.sha256((out / "checkpoint.pt").read_bytes()).hexdigest()
    (out / "checkpoint.pt.sha256").write_text(f"{digest}  checkpoint.pt\n")  # forged, matching
    rc = pipeline.main(pipeline.DVS_GESTURE, TINY + ["--cache-dir", str(cache), "--out", str(out),
                                                     "--resume"])
    assert rc == 2 and "cannot be read safely" in capsys.readouterr().err
    assert not marker.exists()


def _log_epochs(out):
    return [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]


def test_fresh_run_into_a_used_out_is_refused_and_overwrite_starts_a_new_log(cache, tmp_path,
                                                                            capsys):
    out = tmp_path / "run"
    out.mkdir()
    old = json.dumps({"epoch": 1, "old": True}) + "\n"
    (out / "log.jsonl").write_text(old)
    argv = TINY + ["--cache-dir", str(cache), "--out", str(out), "--eval-time-steps", "4"]
    assert pipeline.main(pipeline.DVS_GESTURE, argv) == 2
    err = capsys.readouterr().err
    assert "already holds a run (log.jsonl)" in err and "--resume" in err and "--overwrite" in err
    assert (out / "log.jsonl").read_text() == old
    assert pipeline.main(pipeline.DVS_GESTURE, argv + ["--overwrite"]) == 0
    assert _log_epochs(out) == [1] and "old" not in (out / "log.jsonl").read_text()
    with pytest.raises(SystemExit):  # one or the other
        pipeline.build_parser(pipeline.DVS_GESTURE).parse_args(["--resume", "--overwrite"])


def test_resume_without_checkpoint_says_so_and_starts_a_new_log(cache, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text(json.dumps({"epoch": 1, "killed": True}) + "\n")
    argv = TINY + ["--cache-dir", str(cache), "--out", str(out), "--eval-time-steps", "4"]
    assert pipeline.main(pipeline.DVS_GESTURE, argv + ["--resume"]) == 0
    assert f"--resume: no checkpoint at {out / 'checkpoint.pt'}; starting from epoch 1" in \
        capsys.readouterr().err
    assert _log_epochs(out) == [1] and "killed" not in (out / "log.jsonl").read_text()


def test_conversion_failure_keeps_the_trained_checkpoint_and_resume_converts(cache, tmp_path,
                                                                             capsys, monkeypatch):
    from sj_qvm.convert import ConversionError
    out = tmp_path / "run"
    argv = TINY + ["--cache-dir", str(cache), "--out", str(out), "--eval-time-steps", "4"]
    real_convert = evaluate.convert

    def broken(*a, **k):
        raise ConversionError("QuantReLU 'x' has threshold -1.0")
    monkeypatch.setattr(evaluate, "convert", broken)
    assert pipeline.main(pipeline.DVS_GESTURE, argv) == 2
    err = capsys.readouterr().err
    assert f"the trained model is saved in {out / 'checkpoint.pt'}" in err
    assert "threshold -1.0" in err and "--resume" in err
    assert pipeline.load_checkpoint(out / "checkpoint.pt")["epoch"] == 0
    assert not (out / "results.json").exists()
    monkeypatch.setattr(evaluate, "convert", real_convert)
    assert pipeline.main(pipeline.DVS_GESTURE, argv + ["--resume"]) == 0  # converts, no training
    assert _log_epochs(out) == [1] and (out / "results.json").exists()
    # Resuming with other model flags names them and loads nothing.
    before = (out / "checkpoint.pt").read_bytes()
    assert pipeline.main(pipeline.DVS_GESTURE, argv + ["--resume", "--width", "8"]) == 2
    assert "written with --width 4 (this run: 8)" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="reproduces the issue's CPU trajectory")
def test_issue_command_keeps_every_threshold_positive(cache, tmp_path):
    """Issue 11's run (3 epochs instead of 8 reach the same state): SGD drove 'layers.7.act2' to
    gamma = -0.55 and convert refused it. Now the clamp holds it at MIN_THRESHOLD and it converts."""
    from sj_qvm.qat import MIN_THRESHOLD
    out = tmp_path / "run"
    argv = ["--tiny", "--arch", "resnet18", "--width", "8", "--size", "32", "--epochs", "3",
            "--batch-size", "4", "--frames", "2", "--levels", "2", "--quiet", "--layer-thresholds",
            "--input", "mean",  # the issue's run predates --input
            "--eval-time-steps", "2", "--cache-dir", str(cache), "--out", str(out)]
    assert pipeline.main(pipeline.DVS_GESTURE, argv) == 0
    gammas = {k: v for k, v in pipeline.load_checkpoint(out / "checkpoint.pt")["model"].items()
              if k.endswith("threshold")}
    assert all((v >= MIN_THRESHOLD).all() for v in gammas.values())
    assert gammas["layers.7.act2.threshold"].item() == pytest.approx(MIN_THRESHOLD)  # it engaged


def test_frames_not_levels_warns(cache, tmp_path):
    with pytest.warns(UserWarning, match="exactness needs T = L"):
        pipeline_args.parse(pipeline.DVS_GESTURE, ["--frames", "8", "--levels", "4", "--input",
                                                    "mean"])


def test_missing_root_names_the_layout(tmp_path, capsys):
    rc = pipeline.main(pipeline.DVS_GESTURE, TINY + ["--root", str(tmp_path / "nope"),
                                                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "DvsGesture/" in err and "trials_to_train.txt" in err
    assert "https://research.ibm.com/interactive/dvsgesture/" in err


def test_torchrun_two_gloo_processes(cache, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "examples/dvs_gesture/train.py")] + TINY + [
           "--cache-dir", str(cache), "--out", str(out), "--eval-time-steps", "4"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    log = (out / "log.jsonl").read_text().splitlines()
    assert len(log) == 1  # only rank 0 writes
    assert json.loads((out / "results.json").read_text())["mismatched_neurons"] == 0




def test_zero_epochs_converts_the_initial_net_without_training(cache, tmp_path, capsys):
    """--epochs 0 trains nothing: no log, no checkpoint; the untrained net is still exact at T = L."""
    out = tmp_path / "run"
    argv = TINY + ["--cache-dir", str(cache), "--out", str(out), "--eval-time-steps", "4"]
    argv[argv.index("--epochs") + 1] = "0"
    assert pipeline.main(pipeline.DVS_GESTURE, argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["epochs"] == 0 and res["mismatched_neurons"] == 0
    assert res["snn_accuracy"]["expected"]["4"] == res["ann_accuracy"]
    assert not (out / "log.jsonl").exists() and not (out / "checkpoint.pt").exists()
    printed = capsys.readouterr().out
    assert "epoch " not in printed and str(out / "checkpoint.pt") not in printed
    assert str(out / "results.json") in printed
