"""Plain-ReLU ANN -> QuantReLU ANN: graph rewrite, calibration, QAT fine-tune.

Calibration (:mod:`sj_qvm.interop.calibration`) chooses each threshold gamma from data; it is
deterministic, here and in :class:`~sj_qvm.QVMRecipe`, which runs this same code.
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable, Optional

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..graph import ConversionError, is_relu, set_submodule, trace, unique_name
from ..qat import fit
from ..checks import check_bool, check_int, check_levels, check_positive, check_rounding
from ..quant import QuantReLU
from .calibration import batch_input, calibrate, check_calibration_args
from .reconstruction import distillation

__all__ = ["quantize", "quantize_graph", "finetune", "has_relu"]

_MAXPOOL_MODULES = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d,
                    nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d,
                    nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
                    nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d}
_MAXPOOL_FUNCTIONS = {F.max_pool1d: F.avg_pool1d, F.max_pool2d: F.avg_pool2d,
                      F.max_pool3d: F.avg_pool3d, F.adaptive_max_pool1d: F.adaptive_avg_pool1d,
                      F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
                      F.adaptive_max_pool3d: F.adaptive_avg_pool3d}


def _is_maxpool(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return type(modules[node.target]) in _MAXPOOL_MODULES
    return node.op == "call_function" and node.target in _MAXPOOL_FUNCTIONS


def has_relu(model: nn.Module) -> bool:
    """True if ``model`` (traced) still holds a ``nn.ReLU``, ``F.relu``/``torch.relu`` or ``.relu()``."""
    gm = trace(model)
    modules = dict(gm.named_modules())
    return any(is_relu(n, modules) for n in gm.graph.nodes)


def _avgpool_for(m: nn.Module) -> nn.Module:
    """The AvgPool with ``m``'s window; refuses what average pooling cannot mimic."""
    if isinstance(m, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
        if m.return_indices:
            raise ConversionError(f"{type(m).__name__}(return_indices=True) cannot be replaced")
        return _MAXPOOL_MODULES[type(m)](m.output_size)
    dil = m.dilation if isinstance(m.dilation, tuple) else (m.dilation,)
    if any(d != 1 for d in dil) or m.return_indices:
        raise ConversionError(f"{m} uses dilation or return_indices, which average pooling "
                              "cannot reproduce; replace it by hand")
    # Max-pooling pads with -inf, i.e. padding never wins; average over real inputs only.
    return _MAXPOOL_MODULES[type(m)](m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode,
                                     count_include_pad=False)


def quantize_graph(model: nn.Module, levels: int, rounding: str = "round",
                   replace_maxpool: bool = False, threshold: float = 1.0) -> fx.GraphModule:
    """``model`` traced, with every ReLU call site a fresh :class:`QuantReLU` (uncalibrated).

    ``nn.ReLU`` modules (one QuantReLU per call site when a module is reused), ``F.relu``,
    ``torch.relu`` and ``x.relu()``, in-place variants included, are all replaced. Max-pooling
    stays max-pooling, which :func:`~sj_qvm.convert` turns into an exact spiking max-pool
    (``F.max_pool1d/2d/3d`` calls become the equivalent ``nn.MaxPool`` modules); adaptive
    max-pooling and ``return_indices`` raise :class:`ConversionError`. With
    ``replace_maxpool=True`` every max-pool becomes average pooling over the same window.
    """
    check_levels(levels)
    check_rounding(rounding)
    check_bool(replace_maxpool, "replace_maxpool")
    check_positive(threshold, "threshold")
    gm = trace(copy.deepcopy(model))
    modules = dict(gm.named_modules())
    calls: dict = {}
    for node in list(gm.graph.nodes):
        if _is_maxpool(node, modules) and not replace_maxpool:
            _keep_maxpool(gm, node, modules)
            continue
        if _is_maxpool(node, modules):
            if node.op == "call_module":
                set_submodule(gm, node.target, _avgpool_for(modules[node.target]))
            else:
                args, kwargs = _avgpool_function_args(node)
                node.target = _MAXPOOL_FUNCTIONS[node.target]
                node.args, node.kwargs = args, kwargs
            continue
        if not is_relu(node, modules):
            continue
        if node.op == "call_module":
            k = calls[node.target] = calls.get(node.target, -1) + 1
            target = node.target if k == 0 else unique_name(gm, f"{node.target}_call{k}")
        else:
            target = unique_name(gm, f"quant_{node.name}")
        set_submodule(gm, target, QuantReLU(levels, rounding, threshold))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(target, (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


_MAXPOOL_AS_MODULE = {F.max_pool1d: nn.MaxPool1d, F.max_pool2d: nn.MaxPool2d,
                      F.max_pool3d: nn.MaxPool3d}


def _keep_maxpool(gm: fx.GraphModule, node: fx.Node, modules: dict) -> None:
    """Leave an ``nn.MaxPool1d/2d/3d`` module as it is; make an ``F.max_pool*d`` call one (so that
    ``convert`` finds a module to turn into a spiking max-pool); refuse the rest with a hint."""
    hint = ("pass replace_maxpool=True to use average pooling over the same window (then "
            "fine-tune: sj_qvm.finetune), or use nn.MaxPool2d")
    if node.op == "call_module":
        m = modules[node.target]
        if type(m) in _MAXPOOL_AS_MODULE.values() and not m.return_indices:
            return
        raise ConversionError(f"{type(m).__name__} at graph node '{node.name}' has no exact "
                              f"spiking equivalent (adaptive windows or return_indices); {hint}")
    cls = _MAXPOOL_AS_MODULE.get(node.target)
    sig = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    given = dict(zip(sig, node.args))
    given.update(node.kwargs)
    if cls is None or given.get("return_indices", False) or \
            any(isinstance(given.get(k), fx.Node) for k in sig[1:]):
        raise ConversionError(f"{node.target.__name__} at graph node '{node.name}' has no exact "
                              f"spiking equivalent here (adaptive windows, return_indices or "
                              f"a window computed in the graph); {hint}")
    target = unique_name(gm, f"pool_{node.name}")
    set_submodule(gm, target, cls(given["kernel_size"], given.get("stride"),
                                  given.get("padding", 0), given.get("dilation", 1),
                                  ceil_mode=given.get("ceil_mode", False)))
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(target, (given["input"],))
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)


def _avgpool_function_args(node: fx.Node):
    """``(args, kwargs)`` for ``F.avg_pool*d`` from a ``F.max_pool*d`` / adaptive call."""
    sig = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    if node.target in (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d):
        if node.kwargs.get("return_indices") or (len(node.args) > 2 and node.args[2]):
            raise ConversionError(f"'{node.name}': return_indices=True cannot be replaced")
        return node.args[:2], {k: v for k, v in node.kwargs.items() if k == "output_size"}
    given = dict(zip(sig, node.args))
    given.update(node.kwargs)
    dil = given.get("dilation", 1)
    if any(d != 1 for d in (dil if isinstance(dil, (tuple, list)) else (dil,))) or \
            given.get("return_indices", False):
        raise ConversionError(f"'{node.name}' uses dilation or return_indices, which average "
                              "pooling cannot reproduce; replace it by hand")
    kwargs = {k: given[k] for k in ("stride", "padding", "ceil_mode") if k in given}
    kwargs["count_include_pad"] = False
    return (given["input"], given["kernel_size"]), kwargs


def quantize(model: nn.Module, levels: int, rounding: str = "round", dataloader=None,
             method: str = "mse", channel_wise: bool = True, percentile: float = 99.9,
             replace_maxpool: bool = False, bias_correction: Optional[bool] = None,
             sequential: bool = True, progress: bool = True,
             reconstruct_steps: Optional[int] = None) -> fx.GraphModule:
    """A copy of a plain-ReLU ANN in which every ReLU is a calibrated :class:`~sj_qvm.QuantReLU`.

    Args:
        model: the ANN (left untouched). Traced with ``torch.fx``; ``nn.ReLU`` modules **and**
            ``F.relu`` / ``torch.relu`` / ``x.relu()`` calls are replaced (SpikingJelly 0.14's
            converter silently skips the functional ones).
        levels: L, the number of quantization steps (the SNN then runs T = L steps).
        rounding: ``"floor"``, ``"round"`` (half-up) or ``"ceil"``.
        dataloader: calibration data (tensors or ``(input, target)`` batches). Without it every
            gamma starts at 1.0 with a warning (train or :func:`finetune` next).
        method: ``"mse"`` (default: the gamma minimising each activation's quantization error),
            ``"percentile"`` or ``"max"``; see :mod:`sj_qvm.interop.calibration`.
        channel_wise: one gamma per channel (dim 1 of each activation; default) or per layer.
        percentile: the percentile for ``method="percentile"``, in (0, 100].
        sequential: calibrate layer by layer with the earlier layers quantized (default), or in
            one pass over the float ANN.
        bias_correction: move each layer's per-channel input mean back to the float ANN's through
            the bias of the layer feeding it; ``None`` (default) does it whenever ``sequential``
            (it wins at L = 2 and is neutral at L = 4, 8 in ``benchmarks/bench_conversion.py``).
        reconstruct_steps: after calibration, this many steps of output reconstruction: the
            thresholds distilled towards the float ANN's output distribution, label-free
            (:mod:`sj_qvm.interop.reconstruction`). ``None`` (default): a quarter of the
            calibration batches where the output is ``[B, K, *]`` (it lifts L = 2 above
            SpikingJelly's LTB and is neutral at L = 4); ``0``: none.
        replace_maxpool: ``False`` (default) keeps max-pooling, which ``convert`` makes an exact
            spiking max-pool; ``True`` makes it average pooling over the same window.
    Returns:
        An ``fx.GraphModule`` in eval mode, ``[B, *] -> [B, *]`` like ``model``.
    """
    check_calibration_args(method, channel_wise, percentile, bias_correction, sequential,
                           reconstruct_steps)
    qann = quantize_graph(model, levels, rounding, replace_maxpool)
    if not any(isinstance(m, QuantReLU) for m in qann.modules()):
        raise ConversionError(f"{type(model).__name__} has no ReLU (module or function) to "
                              "quantize")
    if dataloader is None:
        warnings.warn("quantize() without a dataloader leaves every threshold gamma at 1.0; pass "
                      "calibration data, or train / fine-tune the thresholds next", stacklevel=2)
    else:
        calibrate(qann, dataloader, method, channel_wise, percentile, sequential,
                  bias_correction, progress=progress, reconstruct_steps=reconstruct_steps)
    return qann.eval()


def finetune(qann: nn.Module, dataloader, epochs: int = 1, lr: float = 1e-4,
             loss_fn: Optional[Callable] = None, progress: bool = True,
             teacher: Optional[nn.Module] = None) -> nn.Module:
    """Short quantization-aware fine-tune of ``qann``'s weights and thresholds, in place.

    Post-training quantization at small L loses accuracy; a few epochs of QAT (straight-through
    gradients, see :class:`~sj_qvm.QuantReLU`) win it back. Adam at ``lr`` (1e-4 by default: 1e-3
    lost 1.1 points on a converged CNN in ``benchmarks/bench_conversion.py``), cross-entropy unless
    ``loss_fn(output, target)`` is given; a tqdm bar shows the running loss.

    ``teacher`` (the float ANN ``qann`` was quantized from, on the same device) adds the KL
    divergence from its output distribution to ``qann``'s, on each batch (run in eval mode, no
    gradient; its mode is restored after). Labels alone pull a converged net away from what it
    computed (1-epoch fine-tunes lost 0.37 points against PTQ on the benchmark's converged CNN);
    with the teacher's term the converged CNN came within 0.3 points of its float ANN, and the
    3-epoch one above its float ANN (``benchmarks/RESULTS.md``). :class:`Converter` passes the
    ANN it quantized.

    Args:
        dataloader: yields ``(input, target)`` batches.
    Returns:
        ``qann`` in eval mode.
    """
    check_int(epochs, "epochs", minimum=0)
    check_positive(lr, "lr")
    check_bool(progress, "progress")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (output, target) -> loss, got "
                        f"{type(loss_fn).__name__}")
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be an nn.Module (the float ANN) or None, got "
                        f"{type(teacher).__name__}")

    def report(m):
        if progress:
            tqdm.write(f"fine-tune epoch {m['epoch']}/{epochs}: loss {m['train_loss']:.4f}")
    prepare, loss, teacher_mode = None, loss_fn, None
    if teacher is not None:
        base = loss_fn if loss_fn is not None else F.cross_entropy
        prepare, loss = distillation(teacher, base)
        teacher_mode = teacher.training
        teacher.eval()
    try:
        fit(qann, torch.optim.Adam(qann.parameters(), lr=lr), dataloader, epochs, loss_fn=loss,
            prepare=prepare, amp=False, on_epoch=report, progress=progress, desc="fine-tune")
    finally:
        if teacher_mode is not None:
            teacher.train(teacher_mode)
    return qann.eval()
