"""examples/imagenet end to end on an ImageFolder of real JPEG files; torchvision models with --init."""
import json
import os
import pickle

import pytest
import torch

from sj_qvm.app.static import IMAGENET_SPEC, main
from sj_qvm.app.static.models import load_state_dict_file
from test_datasets_image_folder import write_folder

pytest.importorskip("matplotlib")
torchvision = pytest.importorskip("torchvision")
PROG = "examples/imagenet/train.py"
CLASSES = ("n01", "n02", "n03")


def _run(argv, capsys):
    rc = main((IMAGENET_SPEC,), argv, prog=PROG)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imagenet"
    write_folder(root / "train", classes=CLASSES, per_class=6, size=(40, 36))
    write_folder(root / "val", classes=CLASSES, per_class=2, size=(40, 36))
    return root


def _quick(root, out, *extra):
    return ["--root", str(root), "--out", str(out), "--image-size", "32", "--levels", "2",
            "--epochs", "1", "--batch-size", "6", "--workers", "0", "--eval-time-steps", "2",
            "--quiet", "--no-v0-ablation", *extra]


def test_torchvision_init_quantize_calibrate_finetune_is_exact(folder, tmp_path, capsys):
    init = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), init)  # random weights, 1000 classes
    out = tmp_path / "run"
    argv = _quick(folder, out, "--arch", "tv_resnet18", "--init", str(init),
                  "--calibration-samples", "6")
    rc, stdout, err = _run(argv, capsys)
    assert rc == 0, err
    assert "fc.weight, fc.bias skipped" in stdout  # 1000 classes in the file, 3 in the folder
    res = json.loads((out / "results.json").read_text())
    assert res["init"] == str(init) and res["test_samples"] == 2 * len(CLASSES)
    # torchvision's stem MaxPool is kept and converted exactly: N == M everywhere at T = L.
    assert res["mismatched_neurons"] == 0 and res["report_neurons"] > 0
    assert res["snn_accuracy"]["expected"]["2"] == res["ann_accuracy"]
    assert "Table 1 layout" in (out / "tables.md").read_text()
    # The calibrated, fine-tuned thresholds are not the uncalibrated 1.0 everywhere.
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    gammas = [v for k, v in ckpt["model"].items() if k.endswith("threshold")]
    assert gammas and not all(torch.all(g == 1.0) for g in gammas)
    # Resume: the thresholds come from the checkpoint, the run continues after epoch 1.
    argv[argv.index("--epochs") + 1] = "2"
    rc, stdout, err = _run(argv + ["--resume"], capsys)
    assert rc == 0, err
    assert "after epoch 1" in stdout
    assert len((out / "log.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SJ_QVM_SLOW") != "1", reason="slow: set SJ_QVM_SLOW=1 to run")
def test_torchvision_vgg16_bn_with_its_full_classifier_is_exact(folder, tmp_path, capsys):
    """torchvision's vgg16_bn as it ships (138 M parameters: 5 MaxPool2d, a 25088-4096-4096
    classifier with ReLU and Dropout) through --init, calibration, one QAT epoch and conversion:
    N == M for every neuron. About 1.5 minutes and 1.5 GB on 2 CPU cores."""
    init = tmp_path / "vgg16_bn.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg16_bn().state_dict(), init)
    out = tmp_path / "run"
    rc, stdout, err = _run(_quick(folder, out, "--arch", "tv_vgg16_bn", "--init", str(init),
                                  "--calibration-samples", "6"), capsys)
    assert rc == 0, err
    assert "classifier.6.weight, classifier.6.bias skipped" in stdout
    res = json.loads((out / "results.json").read_text())
    assert res["mismatched_neurons"] == 0 and res["report_neurons"] > 1_000_000
    assert res["snn_accuracy"]["expected"]["2"] == res["ann_accuracy"]


def test_sj_qvm_resnet34_imagenet_variant_is_exact(folder, tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = _run(_quick(folder, out, "--arch", "resnet34", "--width", "2", "--pool", "max",
                             "--rounding", "ceil"), capsys)
    assert rc == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["mismatched_neurons"] == 0
    assert res["snn_accuracy"]["expected"]["2"] == res["ann_accuracy"]


class _Evil:
    def __reduce__(self):
        return (print, ("ran code",))


@pytest.mark.parametrize("kind", ["crafted", "garbage", "not_a_dict", "other_arch"])
def test_bad_init_is_refused(folder, tmp_path, capsys, kind):
    bad = tmp_path / f"{kind}.pth"
    if kind == "crafted":
        torch.save({"fc.weight": _Evil()}, bad, _use_new_zipfile_serialization=True,
                   pickle_module=pickle)
    elif kind == "garbage":
        bad.write_bytes(b"\x00not a torch file" * 10)
    elif kind == "not_a_dict":
        torch.save([torch.zeros(2)], bad)
    else:
        torch.save(torchvision.models.resnet34().state_dict(), bad)
    out = tmp_path / "run"
    rc, stdout, err = _run(_quick(folder, out, "--arch", "tv_resnet18", "--init", str(bad)),
                           capsys)
    assert rc == 2 and str(bad) in err and len(err.strip().splitlines()) == 1
    assert "ran code" not in stdout + err
    assert not (out / "checkpoint.pt").exists()
    if kind != "other_arch":
        with pytest.raises(ValueError, match=str(bad)):
            load_state_dict_file(bad)


def test_nan_init_weights_are_named_not_called_dead(folder, tmp_path, capsys):
    init = tmp_path / "resnet18_nan.pth"
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    state["layer1.0.conv2.weight"][3, 5, 1, 1] = float("nan")
    torch.save(state, init)
    rc, _, err = _run(_quick(folder, tmp_path / "run", "--arch", "tv_resnet18", "--init", str(init),
                             "--calibration-samples", "6"), capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "got NaN/inf during calibration at batch 0" in err and "dead" not in err
    assert "the weights hold NaN/inf: 'layer1.0.conv2.weight' (1 NaN and 0 inf of" in err


@pytest.mark.parametrize("arch, needle", [("resnet34", "--init needs a torchvision arch"),
                                           ("tv_resnet18", "x.pth: no such file")])
def test_init_is_checked_before_anything_runs(folder, tmp_path, capsys, arch, needle):
    with pytest.raises(SystemExit) as e:
        main((IMAGENET_SPEC,), _quick(folder, tmp_path / "run", "--arch", arch,
                                      "--init", str(tmp_path / "x.pth")), prog=PROG)
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("workers", ["0", "1"])
def test_corrupt_jpeg_is_named(folder, tmp_path, capsys, workers):
    bad = folder / "train" / CLASSES[1] / "2.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])
    rc, _, err = _run(_quick(folder, tmp_path / "run", "--arch", "resnet18", "--width", "2",
                             "--workers", workers), capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    # one short line that starts with the file, not a worker's traceback squeezed into one
    assert err.startswith(f"{PROG}: error: {bad}: not a readable image (file of 200 bytes)")
    assert "Traceback" not in err and len(err) < len(PROG) + len(str(bad)) + 200


def test_missing_root_and_mismatched_splits(folder, tmp_path, capsys):
    rc, _, err = _run(_quick(tmp_path / "none", tmp_path / "run"), capsys)
    assert rc == 2 and "image-net.org" in err and len(err.strip().splitlines()) == 1
    write_folder(folder / "val", classes=("n99",), per_class=1)
    rc, _, err = _run(_quick(folder, tmp_path / "run"), capsys)
    assert rc == 2 and "same classes" in err
