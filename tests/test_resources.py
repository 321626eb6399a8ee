"""Sizes that drive memory are refused before any work: ``check_levels``' bound (the library's
one home for L), and each job's memory estimate from its flags (:mod:`sj_qvm.app.resources`)."""
import pytest
import torch
import torch.nn as nn

import sj_qvm
from sj_qvm.app import cli, digits, pipeline, resources
from sj_qvm.app.static import CIFAR10_SPEC, CIFAR100_SPEC, main as static_main
from sj_qvm.app.static import pipeline as static_pipeline
from sj_qvm.checks import MAX_LEVELS, check_levels
from test_pipeline import TINY


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Any data read or folder written fails the test: refusals come first."""
    def work(*a, **k):
        raise AssertionError("work started")
    monkeypatch.setattr(digits, "load_digits_tensors", work)
    monkeypatch.setattr(pipeline, "_release_root", work)
    monkeypatch.setattr(static_pipeline, "open_datasets", work)
    monkeypatch.setattr(static_pipeline, "check_fresh", work)
    monkeypatch.setattr(pipeline, "check_fresh", work)
    return tmp_path / "out"


def _refusal(capsys, *flags):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for flag in flags:
        assert flag in err, err
    return err


def test_quantize_refuses_a_levels_beyond_the_bound_before_allocating():
    check_levels(MAX_LEVELS)
    ann = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    batches = [(torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))]
    bound = f"levels must be an int >= 1 and <= MAX_LEVELS = {MAX_LEVELS}"
    with pytest.raises(ValueError, match=bound):
        sj_qvm.quantize(ann, levels=10 ** 9, dataloader=batches, progress=False)


def test_static_levels_10000_is_refused_before_any_dataset_is_read(no_work, capsys):
    argv = ["--root", "nowhere", "--dataset", "cifar10", "--levels", "10000", "--out", str(no_work)]
    with pytest.raises(SystemExit) as e:
        static_main((CIFAR100_SPEC, CIFAR10_SPEC), argv, prog="train.py")
    assert e.value.code == 2
    _refusal(capsys, "--levels", "10000", str(MAX_LEVELS))
    assert not no_work.exists()


@pytest.mark.parametrize("argv, flags", [
    (["--width", "100000"], ["--width 100000", "GiB", "machine's memory"]),
    (["--image-size", "60000"], ["--image-size 60000", "GiB", "machine's memory"]),
    # The SNN runs in chunks, down to one sample: T steps of one large image cannot fit.
    (["--eval-time-steps", "4096", "--batch-size", "1", "--image-size", "1024"],
     ["--eval-time-steps 4096", "--image-size 1024"]),
    (["--levels", "4096", "--eval-time-steps", "1", "--batch-size", "1", "--image-size", "1024"],
     ["--levels 4096", "conversion report"]),
])
def test_static_memory_estimate_names_the_flag(argv, flags, no_work, capsys):
    with pytest.raises(SystemExit) as e:
        static_main((CIFAR100_SPEC, CIFAR10_SPEC), ["--root", "nowhere", "--dataset", "cifar10",
                    "--out", str(no_work)] + argv, prog="train.py")
    assert e.value.code == 2
    _refusal(capsys, *flags, "estimated from the flags")


@pytest.mark.parametrize("argv, flag", [
    (["--width", "100000"], "--width 100000"),
    (["--frames", "4096", "--levels", "4096", "--size", "128"], "--frames 4096"),
    (["--eval-time-steps", "4096", "--batch-size", "100000"], "--eval-time-steps 4096"),
])
def test_dvs_memory_estimate_names_the_flag(argv, flag, no_work, capsys):
    with pytest.raises(SystemExit) as e:
        pipeline.main(pipeline.DVS_GESTURE, TINY + ["--out", str(no_work)] + argv)
    assert e.value.code == 2
    _refusal(capsys, flag, "GiB")


def test_digits_memory_estimate_names_levels(no_work, capsys, monkeypatch):
    monkeypatch.setattr(resources, "memory_bound", lambda device: (1 << 30, "test device's memory"))
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--digits", "--levels", "4096", "--out", str(no_work)])
    assert e.value.code == 2
    _refusal(capsys, "--levels 4096", "1.0 GiB")


def test_the_estimate_is_from_shapes_and_the_sweep_runs_in_bounded_chunks():
    from sj_qvm.app.digits import digits_cnn
    params, acts = resources.network_sizes(lambda: digits_cnn(4, "round", width=8), (1, 8, 8))
    real = digits_cnn(4, "round", width=8)
    assert params == sum(p.numel() for p in real.parameters())
    assert acts == resources.activation_sizes(real, torch.rand(1, 1, 8, 8))
    assert max(acts) == 8 * 8 * 8  # the first conv's [8, 8, 8] output
    step = (64 + 2 * max(acts)) * 4  # one sample at one step, float32
    assert resources.snn_chunk(4, 64, acts) == resources.SNN_CHUNK_BYTES // (4 * step)
    assert resources.snn_chunk(10 ** 9, 64, acts) == 1


def test_chunked_snn_evaluation_equals_the_whole_batch():
    from sj_qvm.app.static.sweep import evaluate_snn
    from sj_qvm.convert import convert
    from sj_qvm.app.digits import digits_cnn
    torch.manual_seed(0)
    ann = digits_cnn(2, "round", width=4).eval()
    x, y = torch.rand(10, 1, 8, 8), torch.randint(0, 10, (10,))
    snn = convert(ann, time_steps=2, current="expected", warn=False)
    loader = [(x, y)]
    assert evaluate_snn(snn, loader, "cpu", 2, chunk=3) == evaluate_snn(snn, loader, "cpu", 2)
