"""The ``sj-qvm`` command: one-line errors with exit code 2 naming the flag, --version, the
demo's wiring and what it prints. Cheap: the DVS demo runs with a tiny release appended."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sj_qvm
from sj_qvm.app import cli, pipeline, pipeline_args
from sj_qvm.app.registry import DVS_GESTURE, EMULATED_DIGITS

REPO = Path(__file__).resolve().parents[1]


def _one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv,flag", [
    (["demo", "--levels", "0"], "--levels must be an int >= 1, got 0"),
    (["demo", "--digits", "--levels", "0"], "--levels must be an int >= 1, got 0"),
    (["demo", "--levels", "-3", "--epochs", "-1"], "--levels must be"),
    (["demo", "--epochs", "-1"], "--epochs must be an int >= 0, got -1"),
    (["demo", "--digits", "--epochs", "-2"], "--epochs must be an int >= 0, got -2"),
    (["demo", "--seed", "-1"], "--seed must be an int >= 0"),
    (["demo", "--rounding", "half"], "--rounding: invalid choice: 'half'"),
    (["demo", "--levels", "four"], "--levels: invalid int value: 'four'"),
    (["demo", "--resume", "--overwrite"], "--overwrite: not allowed with argument --resume"),
    (["demo", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "the following arguments are required: command"),
])
def test_every_cli_error_is_one_line_with_exit_code_2(argv, flag, capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(pipeline, "main", lambda *a, **k: ran.append(a) or 0)
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = _one_line_error(capsys)
    assert err.startswith("sj-qvm") and flag in err
    assert not ran  # stopped before any work


def test_digits_without_scikit_learn_says_what_to_install_in_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn raises ImportError
    monkeypatch.delitem(sys.modules, "sklearn.datasets", raising=False)
    assert cli.main(["demo", "--digits", "--quiet"]) == 2
    err = _one_line_error(capsys)
    assert err.startswith("sj-qvm demo: error:") and "sklearn" in err and "sj-qvm[demo]" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"sj-qvm {sj_qvm.__version__}\n"
    with pytest.raises(SystemExit) as e:
        pipeline.main(pipeline.DVS_GESTURE, ["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"sj-qvm {sj_qvm.__version__}\n"


def test_demo_help_shows_defaults_and_both_jobs(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0 and "--digits" in out
    assert "(default: 4)" in out and "(default: round)" in out and "(default: runs/synthetic)" in out


@pytest.mark.parametrize("gesture", [False, True])
@pytest.mark.parametrize("argv,epochs", [([], 16), (["--epochs", "0"], 0), (["--epochs", "3"], 3)])
def test_demo_runs_the_dvs_pipeline_with_its_recipe(argv, epochs, gesture, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(pipeline, "main", lambda spec, a, prog=None: calls.append((spec, a, prog)))
    cli.main(["demo", "--levels", "3"] + argv + (["--gesture"] if gesture else []))
    (spec, a, prog), = calls
    assert spec is (DVS_GESTURE if gesture else EMULATED_DIGITS) and prog == "sj-qvm demo"
    args = pipeline_args.parse(spec, a)
    assert (args.arch, args.width, args.size, args.optimizer, args.lr, args.batch_size) == \
        ("vgg", 8, 32, "adam", 0.005, 32)
    assert args.levels == 3 and args.epochs == epochs
    # The emulated digits stream their frames (mean, one frame per step: T = L frames); the
    # gesture release holds a stack of 16 frames, which keeps the order of events.
    assert (args.input, args.frames) == (("stack", 16) if gesture else ("mean", 3))
    assert str(args.out) == "runs/demo" and not args.resume and not args.overwrite
    # The streamed digits get the instant-current fine-tune row; the held gesture input has none.
    assert args.finetune_instant == (0 if gesture else 3)


@pytest.mark.parametrize("flag,epochs", [([], 3), (["--finetune-instant", "0"], 0),
                                         (["--finetune-instant", "5"], 5)])
def test_demo_finetune_flag(flag, epochs, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "main", lambda spec, a, prog=None: calls.append(a))
    cli.main(["demo"] + flag)
    assert pipeline_args.parse(EMULATED_DIGITS, calls[0]).finetune_instant == epochs


def test_demo_refuses_a_negative_finetune(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--finetune-instant", "-1"])
    assert e.value.code == 2 and "--finetune-instant" in capsys.readouterr().err


def _tiny_demo(monkeypatch):
    """``sj-qvm demo`` with a tiny release and small net appended (later flags win in argparse)."""
    real = pipeline.main
    tiny = ["--tiny", "--size", "32", "--width", "4", "--eval-time-steps", "1", "4", "--quiet"]
    monkeypatch.setattr(pipeline, "main", lambda spec, argv, prog=None: real(spec, argv + tiny, prog))


def test_demo_prints_what_it_means_and_where_it_wrote(monkeypatch, tmp_path, capsys):
    _tiny_demo(monkeypatch)
    out = tmp_path / "demo"
    argv = ["demo", "--epochs", "1", "--out", str(out), "--cache-dir", str(tmp_path / "syn")]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    printed = captured.out
    # --quiet (in _tiny_demo) silences every bar: the emulation, the frame caches, the fine-tune.
    assert "emulating" not in captured.err and "preprocessing" not in captured.err
    assert "fine-tune" not in captured.err
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "emulated_digits" and res["synthetic"] and res["epochs"] == 1
    assert res["snn_accuracy"]["expected"]["4"] == res["ann_accuracy"]
    for line in ("\ninstant current:", "\nexpected current:", "\nT = L is special",
                 "\nN != M counts"):
        assert line in printed
    listed = printed[printed.index("\nwritten:\n"):].splitlines()[2:9]
    assert sorted(Path(p.strip()).name for p in listed) == sorted(
        ["results.json", "conversion_report.md", "conversion_report.png", "accuracy_vs_T.png",
         "confusion.png", "checkpoint.pt", "log.jsonl"])
    assert all(Path(p.strip()).parent == out for p in listed)
    # Running it again into the same folder is refused in one line; nothing is touched.
    log = (out / "log.jsonl").read_bytes()
    assert cli.main(argv) == 2
    err = _one_line_error(capsys)
    assert err.startswith("sj-qvm demo: error:") and "already holds a run" in err
    assert (out / "log.jsonl").read_bytes() == log


def test_digits_demo_prints_what_it_means_and_where_it_wrote(tmp_path, capsys):
    assert cli.main(["demo", "--digits", "--epochs", "1", "--quiet", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["mismatched_neurons"] == 0 and res["epochs"] == 1
    assert f"neurons with N != M at T = L = 4 (expected current): 0 of {res['neuron_evaluations']} (sample, neuron) pairs" in out
    assert "\ninstant current:" in out and "\nT = L is special" in out and "\nN != M counts" in out
    assert out.endswith(f"written:\n  {tmp_path / 'results.json'}\n")


def test_library_imports_without_the_application_and_the_shell_error_is_one_line():
    """One interpreter (they are slow to start): ``import sj_qvm`` and its library modules load no
    ``sj_qvm.app`` module; then ``sj-qvm demo --digits --levels 0`` (the console script's module)
    fails with one line, exit code 2, no traceback."""
    code = ("import runpy, sys, sj_qvm, sj_qvm.datasets, sj_qvm.qat, sj_qvm.datasets.frames_dataset; "
            "app = sorted(m for m in sys.modules if m.startswith('sj_qvm.app')); "
            "assert not app, app; print('ok', flush=True); "
            "sys.argv = ['sj-qvm', 'demo', '--digits', '--levels', '0']; "
            "runpy.run_module('sj_qvm.app.cli', run_name='__main__')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.stdout == "ok\n", p.stderr[-2000:]
    assert p.returncode == 2
    assert p.stderr == "sj-qvm demo: error: --levels must be an int >= 1, got 0\n"
