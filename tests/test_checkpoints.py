"""Checkpoints: plain types, SHA-256 verified, weights_only, every malformed file a CheckpointError,
no save that loses the old file, stale temporaries of dead writers removed; the run folder's log."""
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from sj_qvm import QuantReLU, atomic
from sj_qvm.app import checkpoint, run_folder
from sj_qvm.app.checkpoint import (CheckpointError, digest_path, load_checkpoint, restore,
                                   save_checkpoint)


def _training(width=4, optimizer="sgd"):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, width), QuantReLU(4, "round", 1.0), nn.Linear(width, 2))
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=0.1))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 5)
    model(torch.rand(8, 3)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def _state(model, opt, sched, epoch=0, **args):
    return {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "args": {"arch": "mlp", "levels": 4, **args}}


def _write_raw(path: Path, obj) -> None:
    """Write any object as a checkpoint with a matching SHA-256 file (what an attacker can do)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    path.write_bytes(buf.getvalue())
    digest_path(path).write_text(f"{hashlib.sha256(buf.getvalue()).hexdigest()}  {path.name}\n")


def _raw_payload(m, o, s, **changes):
    obj = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, **_state(m, o, s)}
    obj.update(changes)
    return obj


def test_round_trip_restores_everything_and_files_are_plain(tmp_path):
    model, opt, sched = _training()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(_state(model, opt, sched, epoch=3), path)
    data = path.read_bytes()
    assert digest_path(path).read_text() == f"{hashlib.sha256(data).hexdigest()}  checkpoint.pt\n"
    torch.load(path, weights_only=True)  # plain types only: loads with the safe unpickler
    fresh, opt2, sched2 = _training(width=4)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    assert restore(load_checkpoint(path), path, fresh, opt2, sched2, {"levels": 4}) == 3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 fresh.state_dict().values()))
    assert opt2.state_dict()["state"][0]["momentum_buffer"].equal(
        opt.state_dict()["state"][0]["momentum_buffer"])
    assert sched2.last_epoch == sched.last_epoch


def test_eight_flipped_bytes_of_a_weight_are_refused(tmp_path):
    model, opt, sched = _training()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(_state(model, opt, sched), path)
    data = bytearray(path.read_bytes())
    w = model[0].weight.detach().numpy().tobytes()
    at = bytes(data).index(w)  # torch stores tensor bytes uncompressed
    data[at:at + 8] = bytes(b ^ 0xFF for b in data[at:at + 8])
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its SHA-256"):
        load_checkpoint(path)
    assert path.read_bytes() == bytes(data)  # left untouched
    # The converse: with a digest of the changed file it loads, and the weight did change.
    digest_path(path).write_text(f"{hashlib.sha256(data).hexdigest()}  checkpoint.pt\n")
    assert not torch.equal(load_checkpoint(path)["model"]["0.weight"], model[0].weight)


class _Payload:
    """Unpickling this runs ``exec``: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_crafted_pickle_does_not_run(tmp_path):
    marker = tmp_path / "marker"
    model, opt, sched = _training()
    path = tmp_path / "checkpoint.pt"
    _write_raw(path, _raw_payload(model, opt, sched, args={"x": _Payload(marker)}))
    with pytest.raises(CheckpointError, match="cannot be read safely: it holds the global exec"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the converse: the file is live when unpickled
    assert marker.read_text() == "ran"


def _del(key):
    def f(model, opt, sched):
        obj = _raw_payload(model, opt, sched)
        del obj[key]
        return obj
    return f


@pytest.mark.parametrize("make,match", [
    (_del("scheduler"), r"lacks the key\(s\) \['scheduler'\]"),
    (_del("format"), "not an sj-qvm training checkpoint"),
    (lambda m, o, s: _raw_payload(m, o, s, epoch="3"), "'epoch' must be an int >= 0, got str '3'"),
    (lambda m, o, s: _raw_payload(m, o, s, epoch=-1), "'epoch' must be an int >= 0"),
    (lambda m, o, s: _raw_payload(m, o, s, epoch=True), "'epoch' must be an int >= 0, got bool"),
    (lambda m, o, s: _raw_payload(m, o, s, version=2), "version 2"),
    (lambda m, o, s: _raw_payload(m, o, s, model=[1, 2]), "'model' must map"),
    (lambda m, o, s: _raw_payload(m, o, s, optimizer={"state": {}}), "not an optimizer state_dict"),
    (lambda m, o, s: _raw_payload(m, o, s, scheduler=None), "'scheduler' must be a dict"),
    (lambda m, o, s: _raw_payload(m, o, s, args="x"), "'args' must be a dict"),
    (lambda m, o, s: [1, 2, 3], "not an sj-qvm training checkpoint"),
])
def test_malformed_checkpoints_raise_checkpoint_error(tmp_path, make, match):
    model, opt, sched = _training()
    path = tmp_path / "checkpoint.pt"
    _write_raw(path, make(model, opt, sched))
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)
    assert path.read_bytes() == before


def test_truncated_and_unverifiable_files(tmp_path):
    model, opt, sched = _training()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(_state(model, opt, sched), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="does not match its SHA-256"):
        load_checkpoint(path)
    _write_raw(path, None)  # a digest that matches, of a truncated torch file
    truncated = data[: len(data) // 2]
    path.write_bytes(truncated)
    digest_path(path).write_text(f"{hashlib.sha256(truncated).hexdigest()}  checkpoint.pt\n")
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_checkpoint(path)
    digest_path(path).write_text("not a digest\n")
    with pytest.raises(CheckpointError, match=r"checkpoint.pt.sha256, line 1"):
        load_checkpoint(path)
    digest_path(path).unlink()
    with pytest.raises(CheckpointError, match="no SHA-256 file checkpoint.pt.sha256"):
        load_checkpoint(path)


def test_other_model_flags_and_optimizer_are_named_and_nothing_is_loaded(tmp_path):
    model, opt, sched = _training(width=4)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(_state(model, opt, sched), path)
    ckpt = load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"--levels 4 \(this run: 8\)"):
        restore(ckpt, path, *_training(width=4), flags={"levels": 8, "arch": "mlp"})
    wide, opt8, sched8 = _training(width=8)
    before = {k: v.clone() for k, v in wide.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"'0.weight' is \(4, 3\) in the file but \(8, 3\)"):
        restore(ckpt, path, wide, opt8, sched8)
    assert all(torch.equal(before[k], v) for k, v in wide.state_dict().items())
    with pytest.raises(CheckpointError, match=r"\['dampening', 'momentum', 'nesterov'\].*Adam "
                                              "does not know; it was written by another optimizer"):
        restore(ckpt, path, *_training(width=4, optimizer="adam"))
    m, o, sc = _training(width=4, optimizer="adam")
    save_checkpoint(_state(m, o, sc), path)
    with pytest.raises(CheckpointError, match="another optimizer"):
        restore(load_checkpoint(path), path, *_training(width=4, optimizer="sgd"))
    # A group with fewer settings (written by an older torch) still loads.
    del ckpt["optimizer"]["param_groups"][0]["differentiable"]
    assert restore(ckpt, path, *_training(width=4)) == 0


def test_save_refuses_non_plain_types_and_keeps_the_old_file(tmp_path):
    model, opt, sched = _training()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(_state(model, opt, sched, epoch=1), path)
    before = path.read_bytes(), digest_path(path).read_bytes()
    with pytest.raises(TypeError, match=r"\['args'\]\['out'\] is a PosixPath"):
        save_checkpoint(_state(model, opt, sched, epoch=2, out=tmp_path), path)
    assert (path.read_bytes(), digest_path(path).read_bytes()) == before


@pytest.mark.parametrize("killed_before_write", [0, 1, 2, None])
def test_a_kill_at_any_point_of_a_save_leaves_a_checkpoint_that_loads(tmp_path, monkeypatch,
                                                                      killed_before_write):
    model, opt, sched = _training()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(_state(model, opt, sched, epoch=1), path)
    real, calls = checkpoint.write_atomic, []

    def write_then_maybe_die(p, data):
        if len(calls) == killed_before_write:
            raise KeyboardInterrupt
        calls.append(p)
        real(p, data)
    monkeypatch.setattr(checkpoint, "write_atomic", write_then_maybe_die)
    try:
        save_checkpoint(_state(model, opt, sched, epoch=2), path)
    except KeyboardInterrupt:
        pass
    # Up to the rename of the new file the old one loads; from then on the new one.
    want = 2 if killed_before_write in (2, None) else 1
    assert load_checkpoint(path)["epoch"] == want


def test_failed_write_leaves_target_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_bytes(b"old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        atomic.write_atomic(path, b"new")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    model, opt, sched = _training()
    path = tmp_path / "checkpoint.pt"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        stale = [tmp_path / f".checkpoint.pt.tmp-{dead}", tmp_path / f".checkpoint.pt.sha256.tmp-{dead}",
                 tmp_path / f".checkpoint.pt.tmp-{10 ** 30}"]  # no such pid can exist
        kept = [tmp_path / f".checkpoint.pt.tmp-{live.pid}", tmp_path / f".other.pt.tmp-{dead}",
                tmp_path / "notes.txt"]
        for p in stale + kept:
            p.write_bytes(b"")
        odd = tmp_path / f".checkpoint.pt.sha256.tmp-{10 ** 30}"
        odd.mkdir()  # a folder under a temporary's name is left alone, without an error
        save_checkpoint(_state(model, opt, sched), path)
        assert not any(p.exists() for p in stale)
        assert all(p.exists() for p in kept) and odd.is_dir()
        assert load_checkpoint(path)["epoch"] == 0
    finally:
        live.kill()
        live.wait()


def _log(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_truncate_log_keeps_exactly_the_checkpoint_epochs(tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [{"epoch": e, "train_loss": 1.0 / e} for e in range(1, 6)]
    _log(log, rows, tail='{"epoch": 6, "tra')  # a kill in the middle of an append
    assert run_folder.truncate_log(log, 5) == 5
    assert [json.loads(l)["epoch"] for l in log.read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert run_folder.truncate_log(log, 3) == 3
    assert [json.loads(l) for l in log.read_text().splitlines()] == rows[:3]
    _log(log, [rows[0], rows[2]])  # epoch 2 missing: keep only what is consistent
    assert run_folder.truncate_log(log, 3) == 1
    assert run_folder.truncate_log(tmp_path / "none.jsonl", 3) == 0


def test_fresh_run_into_a_used_folder_is_refused_and_overwrite_clears_only_run_files(tmp_path):
    run_folder.check_fresh(tmp_path, "dvs", resume=False, overwrite=False)  # empty: fine
    (tmp_path / "log.jsonl").write_text('{"epoch": 1}\n')
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="log.jsonl.*--resume.*--overwrite"):
        run_folder.check_fresh(tmp_path, "dvs", resume=False, overwrite=False)
    run_folder.check_fresh(tmp_path, "dvs", resume=True, overwrite=False)
    run_folder.prepare(tmp_path, "dvs", resume=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


_SAVER = """
import sys, torch
from sj_qvm.app.checkpoint import save_checkpoint
w = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0))  # 4 MiB per save
epoch = 0
while True:
    save_checkpoint({"epoch": epoch, "model": {"w": w + epoch}, "optimizer": {"state": {},
                     "param_groups": []}, "scheduler": {}, "args": {}}, sys.argv[1])
    if epoch == 0:
        print("saved", flush=True)
    epoch += 1
"""


def test_sigkill_during_saves_leaves_a_checkpoint_that_loads_and_the_next_save_cleans_up(tmp_path):
    import os
    import random
    import signal
    import time
    path = tmp_path / "checkpoint.pt"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    rng = random.Random(0)
    w0 = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        p = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE,
                             env=env, text=True)
        assert p.stdout.readline() == "saved\n"
        time.sleep(rng.uniform(0.05, 0.5))
        p.send_signal(signal.SIGKILL)
        p.wait()
        ckpt = load_checkpoint(path)  # whichever epoch it reached, it verifies and is whole
        assert torch.equal(ckpt["model"]["w"], w0 + ckpt["epoch"])
        model, opt, sched = _training()
        save_checkpoint(_state(model, opt, sched, epoch=ckpt["epoch"] + 1), path)
        assert sorted(f.name for f in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.pt.sha256"]
        assert load_checkpoint(path)["epoch"] == ckpt["epoch"] + 1
