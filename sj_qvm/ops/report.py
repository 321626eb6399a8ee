"""``sj_qvm.ops.diagnose()``: the whole picture of the fast paths in one place."""
from __future__ import annotations

import torch


def _cpu() -> dict:
    from . import native  # noqa: PLC0415
    info = {"built": native._module is not None, "why_not": native.unavailable_reason()}
    if native._module is not None:
        info.update(abi=native.ABI, openmp=bool(getattr(native._module, "OPENMP", 0)),
                    simd=("avx2" if native.simd() else "sse2"), pool=(
                        "openmp" if native.pool() else "pthreads"),
                    pool_at_import=native.POOL_AT_IMPORT, min_share=native.min_share(),
                    threads=native.threads())
    return info


def diagnose(*modules, show: bool = True) -> dict:
    """What is built, what is on, and why; ``modules``: nodes, QuantReLUs or networks whose
    layers' last paths to report. Returns a dict; with ``show`` it is also printed::

        {"settings": {...}, "cpu": {...}, "cupy": {...}, "checked": {combination: None or why},
         "fallbacks": [(op, reason), ...], "last": {name: (path, reason)}}
    """
    from . import paths, settings, verify  # noqa: PLC0415
    from .if_loop import dispatch  # noqa: PLC0415
    s = settings.get()
    ok, why = dispatch.cupy_status()
    last = {}
    for i, root in enumerate(modules):
        items = root.named_modules() if isinstance(root, torch.nn.Module) else [("", root)]
        for name, m in items:
            if getattr(m, "last_dispatch", None) is not None or hasattr(m, "backend"):
                label = f"{i}:{name or type(m).__name__}"
                last[label] = (getattr(m, "backend", None), getattr(m, "last_dispatch", None))
    info = {
        "settings": {"native": s.native, "verify": s.verify, "max_threads": s.max_threads,
                     "changed by": dict(s.source)},
        "cpu": _cpu(),
        "cupy": {"works": ok, "why": why, "cuda_available": torch.cuda.is_available()},
        "checked": verify.status(),
        "check_ms": {verify.describe(k): round(t * 1e3, 3) for k, t in verify.TIMINGS.items()},
        "fallbacks": paths.logged(),
        "last": last,
    }
    if show:
        print(format_report(info))
    return info


def format_report(info: dict) -> str:
    lines = ["sj_qvm.ops: backend = auto | torch | cpu | cupy"]
    for section in ("settings", "cpu", "cupy"):
        lines.append(f"  {section}: " + ", ".join(f"{k}={v}" for k, v in info[section].items()))
    lines.append(f"  first-use checks ({len(info['checked'])}):")
    for combo, verdict in info["checked"].items():
        ms = info["check_ms"].get(combo)
        lines.append(f"    {combo}: {'trusted' if verdict is None else verdict}"
                     + (f" ({ms} ms)" if ms is not None else ""))
    lines.append(f"  fallbacks logged ({len(info['fallbacks'])}):")
    lines += [f"    {op}: {reason}" for op, reason in info["fallbacks"]]
    lines.append("  last paths:")
    lines += [f"    {name} (backend={b!r}): {d}" for name, (b, d) in info["last"].items()]
    return "\n".join(lines)


__all__ = ["diagnose", "format_report"]
