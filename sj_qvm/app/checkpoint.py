"""Training checkpoints: plain types only, written atomically with a SHA-256 beside them, and verified,
loaded with ``weights_only=True`` and validated before anything of them is used.

Files, for a checkpoint ``checkpoint.pt``:

* ``checkpoint.pt``: ``torch.save`` of ``{"format", "version", "epoch", "model", "optimizer",
  "scheduler", "args"}``; tensors, str, int, float, bool and None only (no paths, no classes).
* ``checkpoint.pt.sha256``: ``<hex digest>  checkpoint.pt`` lines, the format ``sha256sum -c``
  reads. Normally one line. During a save it also lists the previous file's digest, so a kill at
  any moment leaves a checkpoint (the old one or the new one) that verifies.

The digest catches a corrupt or truncated file; ``weights_only=True`` keeps a crafted pickle from
running code. Every problem raises :class:`CheckpointError` naming the file and what is wrong,
and the file is left as it is.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Optional

import torch

from ..atomic import remove_stale_temporaries, write_atomic

__all__ = ["CheckpointError", "FORMAT", "VERSION", "digest_path", "save_checkpoint",
           "load_checkpoint", "restore"]

FORMAT = "sj-qvm-training-checkpoint"
VERSION = 1
KEYS = ("epoch", "model", "optimizer", "scheduler", "args")
_PLAIN = (str, int, float, bool, type(None))
_DIGEST_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the file is left as it is."""


def digest_path(path: Path) -> Path:
    """The SHA-256 file beside ``path``: ``<name>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _check_plain(obj, where: str) -> None:
    """Raise TypeError unless ``obj`` holds only tensors and plain types (what weights_only loads)."""
    if isinstance(obj, torch.Tensor) or isinstance(obj, _PLAIN):
        return
    if isinstance(obj, (dict, OrderedDict)):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint entry {where} has a {type(k).__name__} key; only "
                                "str and int keys are stored")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"checkpoint entry {where} is a {type(obj).__name__}; only tensors, str, "
                    "int, float, bool, None, lists and dicts are stored (convert paths to str)")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_digests(path: Path) -> list:
    """The digests listed for ``path`` in its SHA-256 file (CheckpointError if it is malformed)."""
    dpath = digest_path(path)
    try:
        text = dpath.read_text(encoding="ascii")
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {path} has no SHA-256 file {dpath.name} beside it, so it cannot be "
            "verified; it was left untouched. It was not written by this version of sj-qvm, or "
            "the file was lost. Start afresh with --overwrite, or restore both files.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"SHA-256 file {dpath} cannot be read ({type(e).__name__}: {e})") \
            from e
    digests = []
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _DIGEST_LINE.fullmatch(line.strip())
        if not m or m.group(2) != path.name:
            raise CheckpointError(f"SHA-256 file {dpath}, line {lineno}: expected "
                                  f"'<64 hex digits>  {path.name}', got {line[:100]!r}")
        digests.append(m.group(1))
    if not digests:
        raise CheckpointError(f"SHA-256 file {dpath} is empty; checkpoint {path} cannot be verified")
    return digests


def _write_digests(path: Path, digests) -> None:
    write_atomic(digest_path(path), "".join(f"{d}  {Path(path).name}\n" for d in digests)
                 .encode("ascii"))


def save_checkpoint(state: Mapping, path: Path) -> None:
    """Write the training ``state`` (the keys of ``KEYS``) to ``path`` atomically, with its SHA-256.

    The previous checkpoint stays valid until the new one is complete: a failed or killed save
    never loses it. Stale temporaries of dead writers are removed first.
    """
    path = Path(path)
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    payload = {"format": FORMAT, "version": VERSION, **{k: state[k] for k in KEYS}}
    _check_plain(payload, "checkpoint")
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    new = _sha256(data)
    for p in (path, digest_path(path)):
        remove_stale_temporaries(p)
    try:
        old = _read_digests(path) if path.exists() else []
    except CheckpointError:
        old = []  # the old file cannot be verified anyway; nothing to keep valid
    # 1. both digests valid, 2. the new file in place, 3. only the new digest valid.
    _write_digests(path, [new] + [d for d in old if d != new][:2])
    write_atomic(path, data)
    _write_digests(path, [new])


def load_checkpoint(path: Path) -> dict:
    """Read, verify and validate the checkpoint at ``path``; returns its dict (tensors on CPU).

    Raises :class:`CheckpointError` for a missing, unverifiable, corrupt, crafted or malformed
    file; nothing is unpickled before the SHA-256 matches, and then only with ``weights_only``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from e
    digests = _read_digests(path)
    got = _sha256(data)
    if got not in digests:
        raise CheckpointError(
            f"checkpoint {path} does not match its SHA-256 in {digest_path(path).name} (file "
            f"{got[:16]}..., expected {digests[0][:16]}...): it is corrupt or was changed; it was "
            "left untouched. Restore a good copy, or start afresh with --overwrite.")
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused a global: a crafted or foreign file
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        raise CheckpointError(
            f"checkpoint {path} cannot be read safely: it holds "
            + (f"the global {found.group(1)}" if found else "objects")
            + " besides tensors and plain types, so it is not an sj-qvm checkpoint (it may be "
            "crafted to run code; it was not unpickled) and was left untouched") from e
    except Exception as e:  # a truncated or odd torch zip
        raise CheckpointError(f"checkpoint {path} cannot be read safely ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); it was left "
                              "untouched") from e
    _validate(ckpt, path)
    return ckpt


def _validate(ckpt, path: Path) -> None:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        what = f"format {ckpt.get('format')!r}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"checkpoint {path} is not an sj-qvm training checkpoint ({what}); "
                              "it was left untouched")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has version {ckpt.get('version')!r}; this "
                              f"sj-qvm reads version {VERSION}")
    missing = [k for k in KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the key(s) {missing}")
    epoch = ckpt["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(f"checkpoint {path}: 'epoch' must be an int >= 0, got "
                              f"{type(epoch).__name__} {epoch!r}")
    model = ckpt["model"]
    if not isinstance(model, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise CheckpointError(f"checkpoint {path}: 'model' must map parameter names to tensors")
    opt = ckpt["optimizer"]
    if not (isinstance(opt, dict) and isinstance(opt.get("state"), dict)
            and isinstance(opt.get("param_groups"), list)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list)
                    for g in opt["param_groups"])):
        raise CheckpointError(f"checkpoint {path}: 'optimizer' is not an optimizer state_dict "
                              "(needs 'state' and 'param_groups' with 'params')")
    if not isinstance(ckpt["scheduler"], dict):
        raise CheckpointError(f"checkpoint {path}: 'scheduler' must be a dict, got "
                              f"{type(ckpt['scheduler']).__name__}")
    args = ckpt["args"]
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise CheckpointError(f"checkpoint {path}: 'args' must be a dict of str keys")
    try:
        _check_plain(args, "args")
    except TypeError as e:
        raise CheckpointError(f"checkpoint {path}: {e}") from None


def restore(ckpt: dict, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler, flags: Optional[Mapping] = None) -> int:
    """Load a validated checkpoint into ``model``, ``optimizer`` and ``scheduler``; returns its epoch.

    ``flags`` (e.g. ``{"arch": "vgg", "levels": 4}``) are this run's settings that must equal the
    checkpoint's ``args``. Everything is checked before anything is loaded, so a mismatch raises
    :class:`CheckpointError` naming the difference and leaves the model untouched.
    """
    path = Path(path)
    saved = ckpt["args"]
    diff = [f"--{k.replace('_', '-')} {saved[k]!r} (this run: {v!r})"
            for k, v in (flags or {}).items() if k in saved and saved[k] != v]
    if diff:
        raise CheckpointError(f"checkpoint {path} was written with " + ", ".join(diff)
                              + "; resume with the same settings, or start afresh with --overwrite")
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in ckpt["model"]]
    unexpected = [k for k in ckpt["model"] if k not in own]
    if missing:
        problems.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    if unexpected:
        problems.append(f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
    shapes = [f"'{k}' is {tuple(v.shape)} in the file but {tuple(own[k].shape)} here"
              for k, v in ckpt["model"].items() if k in own and v.shape != own[k].shape]
    if shapes:
        problems.append(f"{len(shapes)} shape(s) differ: {shapes[0]}")
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit this model ({'; '.join(problems)}): "
                              "it was written for other model flags; it was left untouched")
    _check_optimizer(ckpt["optimizer"], optimizer, path)
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from e
    return ckpt["epoch"]


def _check_optimizer(saved: dict, optimizer: torch.optim.Optimizer, path: Path) -> None:
    groups = optimizer.param_groups
    if len(saved["param_groups"]) != len(groups):
        raise CheckpointError(f"checkpoint {path}: the optimizer has {len(saved['param_groups'])} "
                              f"parameter groups, this run's has {len(groups)}")
    for i, (g_saved, g) in enumerate(zip(saved["param_groups"], groups)):
        foreign = sorted(set(g_saved) - set(g))  # fewer keys is fine: an older torch wrote it
        if foreign:
            raise CheckpointError(
                f"checkpoint {path}: optimizer group {i} has settings {foreign} that this run's "
                f"{type(optimizer).__name__} does not know; it was written by another optimizer")
        if len(g_saved["params"]) != len(g["params"]):
            raise CheckpointError(f"checkpoint {path}: optimizer group {i} holds "
                                  f"{len(g_saved['params'])} parameters, this run's "
                                  f"{len(g['params'])}")
    params = [p for g in groups for p in g["params"]]
    ids = [i for g in saved["param_groups"] for i in g["params"]]
    by_id = dict(zip(ids, params))
    for pid, st in saved["state"].items():
        if pid not in by_id or not isinstance(st, dict):
            raise CheckpointError(f"checkpoint {path}: optimizer state for unknown parameter "
                                  f"{pid!r}")
        p = by_id[pid]
        for name, v in st.items():
            if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape != p.shape:
                raise CheckpointError(f"checkpoint {path}: optimizer state '{name}' of parameter "
                                      f"{pid} is {tuple(v.shape)}, the parameter {tuple(p.shape)}")
