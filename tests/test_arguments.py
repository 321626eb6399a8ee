"""The DVS pipeline's command line: bad values stop in one line (exit code 2) naming the flag,
before any data is read or training starts; --help shows every default and the CPU time."""
import pytest

from sj_qvm.app import pipeline, pipeline_args

SPEC = pipeline.DVS_GESTURE


@pytest.mark.parametrize("argv,match", [
    (["--epochs", "-1"], "--epochs must be an int >= 0, got -1"),
    (["--levels", "0"], "--levels must be an int >= 1, got 0"),
    (["--frames", "0"], "--frames must be an int >= 1, got 0"),
    (["--batch-size", "-1"], "--batch-size must be an int >= 1"),
    (["--width", "0"], "--width must be an int >= 1"),
    (["--seed", "-5"], "--seed must be an int >= 0"),
    (["--eval-time-steps", "1", "0"], "--eval-time-steps must be an int >= 1, got 0"),
    (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--weight-decay", "-0.0001"], "--weight-decay must be a finite number >= 0"),
    (["--resume", "--overwrite"], "--overwrite: not allowed with argument --resume"),
    (["--arch", "alexnet"], "--arch: invalid choice: 'alexnet'"),
])
def test_bad_values_stop_in_one_line_with_the_flag_named(argv, match, capsys, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        pipeline.main(SPEC, argv + ["--out", str(out), "--cache-dir", str(tmp_path / "syn")],
                      prog="train.py")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("train.py: error: ") and match in err, err
    assert not out.exists() and not (tmp_path / "syn").exists()  # nothing written


def test_levels_is_checked_before_frames(capsys):
    """The demo passes --levels L --frames L; a bad L must be named as --levels."""
    with pytest.raises(SystemExit):
        pipeline_args.parse(SPEC, ["--levels", "0", "--frames", "0"])
    assert "--levels must be" in capsys.readouterr().err


def test_good_values_pass():
    args = pipeline_args.parse(SPEC, ["--lr", "0.01", "--weight-decay", "0", "--epochs", "0",
                                      "--eval-time-steps", "1", "4", "--arch", "vgg"])
    assert args.lr == 0.01 and args.weight_decay == 0 and args.eval_time_steps == [1, 4]
    assert args.epochs == 0 and args.width == 16  # vgg's default width


def test_help_shows_every_default_and_the_cpu_time():
    text = " ".join(pipeline.build_parser(SPEC, "train.py").format_help().split())
    for default in ("(default: runs/dvs_gesture)", "(default: 30)", "(default: 0.1)",
                    "(default: sgd)", "(default: resnet18)", "(default: 128)", "(default: 16)",
                    "(default: 0.0005)", "(default: [1, 2, 4, 8, 16])", "(default: round)",
                    "(default: runs/synthetic)", "(default: 0)"):
        assert default in text, default
    assert "45 minutes on 2 CPU cores" in text and "--arch vgg --width 8 --size 64" in text
    assert "(default: False)" not in text  # flags do not show a default
