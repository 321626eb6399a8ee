"""The DVS pipeline's command line: bad values stop before any data is read or training starts."""
import pytest

from sj_qvm import pipeline


def _resolve(argv):
    spec = pipeline.DVS_GESTURE
    return pipeline._resolve(pipeline.build_parser(spec).parse_args(argv), spec)


@pytest.mark.parametrize("argv,match", [
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--batch-size", "-1"], "--batch-size must be >= 1"),
    (["--eval-time-steps", "1", "0"], r"--eval-time-steps must all be >= 1, got \[1, 0\]"),
    (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--weight-decay", "-0.0001"], "--weight-decay must be a finite number >= 0"),
])
def test_bad_values_stop_with_the_flag_named(argv, match):
    with pytest.raises(SystemExit, match=match):
        _resolve(argv)


def test_good_values_pass_and_resume_excludes_overwrite(capsys):
    args = _resolve(["--lr", "0.01", "--weight-decay", "0", "--eval-time-steps", "1", "4"])
    assert args.lr == 0.01 and args.weight_decay == 0 and args.eval_time_steps == [1, 4]
    with pytest.raises(SystemExit):
        _resolve(["--resume", "--overwrite"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_bad_value_fails_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="--lr"):
        pipeline.main(pipeline.DVS_GESTURE, ["--lr", "-1", "--out", str(out),
                                             "--cache-dir", str(tmp_path / "syn")])
    assert not out.exists() and not (tmp_path / "syn").exists()
