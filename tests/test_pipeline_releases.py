"""The CIFAR10-DVS example's emulated releases: ``--emulated`` (scikit-learn's digits) and
``--images DIR`` (a torchvision folder), each emulated in CIFAR10-DVS's layout; refused beside
``--root``, with each other, for an empty folder (naming the layout), and on the gesture example.
"""
import json

import pytest

from sj_qvm.app import pipeline
from sj_qvm.app.pipeline_args import parse_release
from sj_qvm.app.registry import CIFAR10_DVS, DVS_GESTURE, EMULATED_DIGITS


def test_no_flag_is_the_dataset_itself():
    args, spec = parse_release(CIFAR10_DVS, [])
    assert spec is CIFAR10_DVS and not args.emulated and args.images is None


def test_emulated_is_the_digits_release():
    assert parse_release(CIFAR10_DVS, ["--emulated"])[1] is EMULATED_DIGITS


@pytest.mark.parametrize("argv,says", [
    (["--emulated", "--root", "x"], "--root reads a real release; --emulated writes"),
    (["--emulated", "--images", "x"], "not allowed with argument"),
])
def test_conflicts_are_refused(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        parse_release(CIFAR10_DVS, argv)
    assert e.value.code == 2 and says in capsys.readouterr().err


def test_an_images_folder_without_images_shows_the_layout(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        parse_release(CIFAR10_DVS, ["--images", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--images:" in err and "MNIST" in err


def test_an_mnist_folder_is_an_emulated_mnist_release(tmp_path):
    (tmp_path / "MNIST").mkdir()
    assert parse_release(CIFAR10_DVS, ["--images", str(tmp_path)])[1].name == "emulated_mnist"


def test_the_gesture_example_has_no_such_flags(capsys):
    with pytest.raises(SystemExit) as e:
        parse_release(DVS_GESTURE, ["--emulated"])
    assert e.value.code == 2 and "unrecognized arguments: --emulated" in capsys.readouterr().err


def test_an_emulated_run_trains_on_the_emulated_release(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["--emulated", "--tiny", "--epochs", "0", "--arch", "vgg", "--width", "4", "--size",
            "32", "--eval-time-steps", "4", "--quiet", "--cache-dir", str(cache), "--out",
            str(out)]
    assert pipeline.main(CIFAR10_DVS, argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "emulated_digits" and res["test_samples"] == 10
    assert (cache / "emulated_digits_tiny" / "airplane").is_dir()  # CIFAR10-DVS's layout
