"""The DVS pipeline's ``--input``: a bad value stops at parsing with one line naming the allowed
values; a resume must use the representation its checkpoint was trained on; each dataset's
default and ``--paper`` choice come from its spec."""
import json

import pytest

from sj_qvm.app import pipeline, pipeline_args
from sj_qvm.datasets.representations import representation

TINY = ["--tiny", "--epochs", "1", "--arch", "vgg", "--width", "4", "--size", "32",
        "--batch-size", "8", "--optimizer", "adam", "--lr", "0.01", "--quiet",
        "--eval-time-steps", "4"]


@pytest.mark.parametrize("value, says", [
    ("median", "--input must be one of mean, stack, bins:K"),
    ("bins:0", "--input must be one of mean, stack, bins:K"),
    ("bins:3", "bins:3 needs K to divide the number of frames T = 16"),  # the held default
])
def test_bad_input_is_one_line_and_exit_code_2(value, says, capsys):
    with pytest.raises(SystemExit) as e:
        pipeline_args.parse(pipeline.DVS_GESTURE, ["--input", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and err.startswith(
        f"{pipeline_args.build_parser(pipeline.DVS_GESTURE).prog}: error:")


def test_defaults_come_from_the_dataset_and_an_explicit_input_wins():
    for spec in (pipeline.DVS_GESTURE, pipeline.CIFAR10_DVS):
        assert pipeline_args.parse(spec, []).input == spec.input
        assert pipeline_args.parse(spec, ["--paper"]).input == spec.paper_input
        assert pipeline_args.parse(spec, ["--paper", "--input", "bins:2"]).input == "bins:2"
        representation(spec.input).channels(4)  # a valid name for the default T = 4
    assert "input" in pipeline_args.RESUME_FLAGS


def test_a_held_input_runs_its_own_T_and_does_not_warn(recwarn):
    args = pipeline_args.parse(pipeline.DVS_GESTURE, ["--frames", "8", "--levels", "4",
                                                      "--input", "stack"])
    assert args.frames == 8 and not [w for w in recwarn if "exactness" in str(w.message)]


def test_resume_with_another_input_is_refused_naming_both(tmp_path, capsys):
    out = tmp_path / "run"
    argv = TINY + ["--cache-dir", str(tmp_path / "syn"), "--out", str(out)]
    assert pipeline.main(pipeline.DVS_GESTURE, argv + ["--input", "mean"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["input"] == "mean" and res["input_streams"] is True
    assert res["mismatched_neurons"] == 0
    before = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    argv += ["--frames", "4"]  # the same T, so that only the input differs
    assert pipeline.main(pipeline.DVS_GESTURE, argv + ["--input", "stack", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "written with --input 'mean' (this run: 'stack')" in err
    assert (out / "checkpoint.pt").read_bytes() == before
