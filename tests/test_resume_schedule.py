"""``--resume`` with other ``--epochs`` / ``--lr`` (both pipelines): the new settings apply, the
cosine schedule continues over the new total, the weights move, and the log shows the real lr."""
import json

import pytest
import torch

from sj_qvm.app import pipeline
from sj_qvm.app.optim import continue_schedule, cosine_lr, make_optimizer, make_scheduler
from sj_qvm.app.static import CIFAR10_SPEC, CIFAR100_SPEC, main as static_main
from test_datasets_cifar import write_cifar10
from test_pipeline import TINY

pytest.importorskip("matplotlib")


def _rows(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _weights(out):
    return pipeline.load_checkpoint(out / "checkpoint.pt")["model"]


def _moved(before, after):
    return any(not torch.equal(before[k], after[k])
               for k in before if before[k].is_floating_point())


def test_static_resume_with_more_epochs_and_a_new_lr_trains_at_that_lr(tmp_path, capsys):
    write_cifar10(tmp_path / "data", n=8)
    out = tmp_path / "run"
    argv = ["--root", str(tmp_path / "data"), "--out", str(out), "--dataset", "cifar10",
            "--arch", "resnet20", "--width", "2", "--levels", "2", "--batch-size", "16",
            "--workers", "0", "--eval-time-steps", "2", "--no-v0-ablation", "--quiet"]
    specs = (CIFAR100_SPEC, CIFAR10_SPEC)
    assert static_main(specs, argv + ["--epochs", "1"], prog="train.py") == 0
    first = _weights(out)
    assert _rows(out)[0]["lr"] == 0.1  # epoch 1 trained at the base rate
    capsys.readouterr()
    assert static_main(specs, argv + ["--epochs", "2", "--lr", "0.2", "--resume"],
                       prog="train.py") == 0
    printed = capsys.readouterr().out
    rows = _rows(out)
    # Epoch 2 of a 2-epoch cosine schedule from 0.2 trains at 0.1, not at the old schedule's 0.
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["lr"] == pytest.approx(cosine_lr(0.2, 1, 2)) == pytest.approx(0.1)
    assert "--lr 0.2 (the checkpoint's: 0.1)" in printed and "epoch 2 trains at lr 0.1" in printed
    assert "lr 0.1" in next(line for line in printed.splitlines() if line.startswith("epoch 2/2"))
    assert _moved(first, _weights(out))
    assert pipeline.load_checkpoint(out / "checkpoint.pt")["args"]["lr"] == 0.2


def test_dvs_resume_with_more_epochs_moves_the_weights(tmp_path, capsys):
    out = tmp_path / "run"
    argv = TINY + ["--cache-dir", str(tmp_path / "syn"), "--out", str(out),
                   "--eval-time-steps", "4"]
    assert pipeline.main(pipeline.DVS_GESTURE, argv) == 0  # --epochs 1, adam, lr 0.01
    first = _weights(out)
    argv[argv.index("--epochs") + 1] = "3"
    capsys.readouterr()
    assert pipeline.main(pipeline.DVS_GESTURE, argv + ["--resume"]) == 0
    printed = capsys.readouterr().out
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["lr"] for r in rows[1:]] == pytest.approx([cosine_lr(0.01, e, 3) for e in (1, 2)])
    assert "--epochs 3 (the checkpoint's: 1)" in printed
    assert _moved(first, _weights(out))


def test_plain_resume_keeps_the_restored_schedule_and_fewer_epochs_train_nothing():
    from types import SimpleNamespace
    model = torch.nn.Linear(2, 2)
    args = SimpleNamespace(optimizer="sgd", lr=0.1, weight_decay=0.0, epochs=4)
    opt = make_optimizer(args, model)
    sched = make_scheduler(args, opt)
    opt.step()
    sched.step()
    same, note = continue_schedule(args, opt, sched, vars(args), 1)
    assert same is sched and note is None
    fewer = SimpleNamespace(**dict(vars(args), epochs=1))
    _, note = continue_schedule(fewer, opt, sched, vars(args), 1)
    assert "nothing is left to train" in note
