"""The fast paths' process-wide defaults, read in one place.

Each op's ``backend="auto"`` consults these; an explicit ``backend`` on a node, a ``QuantReLU`` or
``convert`` chooses for itself. :func:`sj_qvm.ops.diagnose` shows every value and where it came
from.

* ``native``: whether the compiled CPU kernels (``sj_qvm/ops/_cpu.c``) may run. Default on;
  ``SJ_QVM_NO_NATIVE=1`` in the environment turns it off at import, :func:`configure` at run time.
  Off, ``"auto"`` takes torch and an explicit ``backend="cpu"`` raises, saying so.
* ``verify``: the compiled paths whose results are checked against the torch reference the first
  time they run a new combination (:mod:`sj_qvm.ops.verify`). Default ``("cpu", "cupy")``;
  ``SJ_QVM_VERIFY`` in the environment sets it (``0`` none, ``cupy``, ``cpu``, ``cpu,cupy``).
* ``max_threads``: the most threads a compiled CPU kernel runs (:func:`threads`:
  ``min(torch.get_num_threads(), max_threads)``), the kernels of ``sj_qvm.ops`` (at most the
  extension's 64) and the event counter of ``sj_qvm.datasets.frames`` (at most its extension's
  16, and one per 131072 events).

The compiled kernels' own switches (vector build, thread pool, work per thread) are state of the
extension: :func:`sj_qvm.ops.native.simd`, :func:`~sj_qvm.ops.native.pool` and
:func:`~sj_qvm.ops.native.min_share` set them, and :func:`sj_qvm.ops.diagnose` reports them with
the reason each has its value.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace

import torch

from ..checks import check_bool, check_int

PATHS = ("cpu", "cupy")  # the compiled paths


def _env_verify(raw: str) -> tuple:
    if raw.strip().lower() in ("0", "none", "off", ""):
        return ()
    names = tuple(sorted({s.strip().lower() for s in raw.split(",") if s.strip()}))
    bad = [n for n in names if n not in PATHS]
    if bad:
        raise ValueError(f"SJ_QVM_VERIFY={raw!r}: each entry must be one of {PATHS} (or 0 for "
                         "none), separated by commas")
    return names


@dataclass(frozen=True)
class Settings:
    native: bool = True
    verify: tuple = PATHS
    max_threads: int = 64
    source: tuple = ()  # (name, where its value came from)


def _from_environment() -> Settings:
    source = []
    native = os.environ.get("SJ_QVM_NO_NATIVE", "") in ("", "0")
    if not native:
        source.append(("native", "SJ_QVM_NO_NATIVE is set"))
    verify = PATHS
    if "SJ_QVM_VERIFY" in os.environ:
        verify = _env_verify(os.environ["SJ_QVM_VERIFY"])
        source.append(("verify", f"SJ_QVM_VERIFY={os.environ['SJ_QVM_VERIFY']!r}"))
    return Settings(native=native, verify=verify, source=tuple(source))


_current = _from_environment()


def get() -> Settings:
    """The settings in force."""
    return _current


def configure(*, native=None, verify=None, max_threads=None) -> Settings:
    """Change the defaults for the process (arguments left ``None`` keep their value); returns
    the previous settings, which :func:`restore` puts back."""
    global _current
    previous, changes, source = _current, {}, dict(_current.source)
    if native is not None:
        changes["native"] = check_bool(native, "native")
        source["native"] = "configure()"
    if verify is not None:
        if isinstance(verify, str):
            verify = (verify,)
        verify = tuple(sorted(set(verify)))
        bad = [v for v in verify if v not in PATHS]
        if bad:
            raise ValueError(f"verify must name paths among {PATHS}, got {bad}")
        changes["verify"] = verify
        source["verify"] = "configure()"
    if max_threads is not None:
        changes["max_threads"] = check_int(max_threads, "max_threads", minimum=1, maximum=64)
        source["max_threads"] = "configure()"
    _current = replace(_current, source=tuple(source.items()), **changes)
    return previous


def restore(previous: Settings) -> None:
    global _current
    _current = previous


@contextlib.contextmanager
def configured(**kwargs):
    """:func:`configure` within the block, restored after."""
    previous = configure(**kwargs)
    try:
        yield _current
    finally:
        restore(previous)


def threads() -> int:
    """Threads for a compiled CPU kernel: torch's thread count, at most ``max_threads``."""
    return max(1, min(_current.max_threads, torch.get_num_threads()))


def verifies(path: str) -> bool:
    return path in _current.verify


__all__ = ["Settings", "get", "configure", "configured", "restore", "threads", "verifies",
           "PATHS"]
