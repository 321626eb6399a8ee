"""Plain-ReLU ANN -> QuantReLU ANN: graph rewrite, percentile calibration, QAT fine-tune.

Calibration sets each threshold gamma to a percentile of that activation's ReLU outputs
``max(x, 0)`` over the calibration data (zeros included, as SpikingJelly's ``VoltageHook`` does).
It is deterministic: the same ANN and the same loader (same batches, same order) always give the
same thresholds, here and in :class:`~sj_qvm.QVMRecipe`, which runs this same code.

Bounded memory: each layer keeps at most ``max_samples`` activation values. A batch with more than
``per_batch`` values contributes ``per_batch`` of them, drawn uniformly with replacement by a
``torch.Generator`` seeded with the batch index (no global RNG is touched). When the kept pool
reaches ``max_samples`` it is thinned to every second value and ``per_batch`` is halved, so every
batch keeps the same weight. The percentile of that pool is exact (``torch.quantile``, linear
interpolation as ``numpy.percentile``) and equals the percentile of all activations whenever no
batch was subsampled, which is the case for small loaders.
"""
from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..convert import ConversionError, _set_submodule, trace
from ..quant import QuantReLU, check_levels, check_rounding

__all__ = ["quantize", "calibrate", "finetune", "batch_input", "has_relu"]

_RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_, torch.nn.functional.relu_)
_RELU_METHODS = ("relu", "relu_")
_MAXPOOL_MODULES = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d,
                    nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d,
                    nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
                    nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d}
_MAXPOOL_FUNCTIONS = {F.max_pool1d: F.avg_pool1d, F.max_pool2d: F.avg_pool2d,
                      F.max_pool3d: F.avg_pool3d, F.adaptive_max_pool1d: F.adaptive_avg_pool1d,
                      F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
                      F.adaptive_max_pool3d: F.adaptive_avg_pool3d}


def _is_relu(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return type(modules[node.target]) is nn.ReLU
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in _RELU_METHODS


def _is_maxpool(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return type(modules[node.target]) in _MAXPOOL_MODULES
    return node.op == "call_function" and node.target in _MAXPOOL_FUNCTIONS


def has_relu(model: nn.Module) -> bool:
    """True if ``model`` (traced) still holds a ``nn.ReLU``, ``F.relu``/``torch.relu`` or ``.relu()``."""
    gm = trace(model)
    modules = dict(gm.named_modules())
    return any(_is_relu(n, modules) for n in gm.graph.nodes)


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


def _unique_name(root: nn.Module, base: str) -> str:
    names = dict(root.named_modules())
    name, k = base, 0
    while name in names or hasattr(root, name):
        k += 1
        name = f"{base}_{k}"
    return name


def quantize_graph(model: nn.Module, levels: int, rounding: str = "round",
                   replace_maxpool: bool = False, threshold: float = 1.0) -> fx.GraphModule:
    """``model`` traced, with every ReLU call site a fresh :class:`QuantReLU` (uncalibrated).

    ``nn.ReLU`` modules (one QuantReLU per call site when a module is reused), ``F.relu``,
    ``torch.relu`` and ``x.relu()``, in-place variants included, are all replaced. Max-pooling
    raises :class:`ConversionError`, or becomes average pooling with ``replace_maxpool=True``.
    """
    check_levels(levels)
    check_rounding(rounding)
    gm = trace(copy.deepcopy(model))
    modules = dict(gm.named_modules())
    calls: dict = {}
    for node in list(gm.graph.nodes):
        if _is_maxpool(node, modules):
            if not replace_maxpool:
                what = (type(modules[node.target]).__name__ if node.op == "call_module"
                        else node.target.__name__)
                raise ConversionError(
                    f"{what} at graph node '{node.name}': max-pooling has no exact spiking "
                    "equivalent; pass replace_maxpool=True to use average pooling instead (then "
                    "fine-tune: sj_qvm.finetune), or replace it before training")
            if node.op == "call_module":
                _set_submodule(gm, node.target, _avgpool_for(modules[node.target]))
            else:
                args, kwargs = _avgpool_function_args(node)
                node.target = _MAXPOOL_FUNCTIONS[node.target]
                node.args, node.kwargs = args, kwargs
            continue
        if not _is_relu(node, modules):
            continue
        if node.op == "call_module":
            k = calls[node.target] = calls.get(node.target, -1) + 1
            target = node.target if k == 0 else _unique_name(gm, f"{node.target}_call{k}")
        else:
            target = _unique_name(gm, f"quant_{node.name}")
        _set_submodule(gm, target, QuantReLU(levels, rounding, threshold))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(target, (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


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


def batch_input(batch):
    """The model input in a loader batch: a tensor, the first item of a tuple/list, or a dict entry."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch:
        return batch_input(batch[0])
    if isinstance(batch, dict):
        for key in ("input", "image", "images", "img", "x", "data"):
            if key in batch:
                return batch[key]
    raise TypeError(f"cannot find the input tensor in a batch of type {type(batch).__name__}; "
                    "yield tensors or (input, target) pairs")


class _PercentileObserver:
    """Bounded, deterministic pool of one activation's ReLU outputs (see the module docstring)."""

    def __init__(self, max_samples: int, per_batch: int):
        self.max_samples, self.per_batch = max_samples, per_batch
        self.chunks: list = []
        self.size = 0

    def add(self, x: torch.Tensor, batch_index: int) -> None:
        v = torch.clamp(x.detach(), min=0).flatten().to(torch.float64).cpu()
        if v.numel() > self.per_batch:
            g = torch.Generator().manual_seed(batch_index)
            v = v[torch.randint(v.numel(), (self.per_batch,), generator=g)]
        self.chunks.append(v)
        self.size += v.numel()
        while self.size > self.max_samples:
            self.chunks = [c[::2] for c in self.chunks]
            self.size = sum(c.numel() for c in self.chunks)
            self.per_batch = max(1, self.per_batch // 2)

    def percentile(self, q: float) -> float:
        if not self.chunks:
            raise ValueError("no calibration activations were recorded")
        return torch.quantile(torch.cat(self.chunks), q / 100.0).item()


def observe(model: nn.Module, max_samples: int = 1 << 22, per_batch: int = 1 << 18):
    """Attach a percentile observer to every QuantReLU of ``model``: ``(observers, hooks, state)``.

    While attached, each QuantReLU passes ``relu(x)`` on: thresholds are calibrated on the float
    ANN's activations (SpikingJelly's ``VoltageHook`` convention).
    """
    observers, hooks, state = {}, [], {"batch": 0}
    for name, m in model.named_modules():
        if isinstance(m, QuantReLU):
            obs = observers[name] = _PercentileObserver(max_samples, per_batch)
            hooks.append(m.register_forward_hook(_observer_hook(obs, state)))
    return observers, hooks, state


def _observer_hook(obs: _PercentileObserver, state: dict):
    def hook(mod, inp, out):
        obs.add(inp[0], state["batch"])
        # Calibrate on the float ANN, as SpikingJelly does: an uncalibrated threshold must not
        # distort what the layers after it see.
        return torch.relu(inp[0])
    return hook


def run_calibration(model: nn.Module, dataloader, state: dict, progress: bool = True) -> None:
    """Feed ``dataloader`` through ``model`` in eval mode, without gradients, with a tqdm bar."""
    from tqdm.auto import tqdm
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        for i, batch in enumerate(tqdm(dataloader, desc="calibrating thresholds",
                                       disable=not progress, leave=False)):
            state["batch"] = i
            model(batch_input(batch).to(device))


def set_thresholds(model: nn.Module, observers: dict, percentile: float) -> dict:
    """Set each observed QuantReLU's gamma to its percentile; ``{name: gamma}``."""
    modules = dict(model.named_modules())
    chosen = {}
    for name, obs in observers.items():
        gamma = obs.percentile(percentile)
        if not gamma > 0:
            # Below the percentile everything is 0: fall back to the largest activation seen.
            gamma = obs.percentile(100.0)
        if not gamma > 0:
            raise ValueError(f"QuantReLU '{name}' saw only zeros during calibration: the layer is "
                             "dead on this data; check the ANN or the calibration loader")
        with torch.no_grad():
            modules[name].threshold.fill_(gamma)
        chosen[name] = gamma
    return chosen


def calibrate(model: nn.Module, dataloader, percentile: float = 99.9,
              progress: bool = True) -> dict:
    """Set every QuantReLU threshold of ``model`` (in place) from ``dataloader``; ``{name: gamma}``."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    observers, hooks, state = observe(model)
    try:
        run_calibration(model, dataloader, state, progress)
    finally:
        for h in hooks:
            h.remove()
    return set_thresholds(model, observers, percentile)


def quantize(model: nn.Module, levels: int, rounding: str = "round", dataloader=None,
             percentile: float = 99.9, replace_maxpool: bool = False,
             progress: bool = True) -> fx.GraphModule:
    """A copy of a plain-ReLU ANN in which every ReLU is a :class:`~sj_qvm.QuantReLU`.

    Args:
        model: the ANN (left untouched). Traced with ``torch.fx``; ``nn.ReLU`` modules **and**
            ``F.relu`` / ``torch.relu`` / ``x.relu()`` calls are replaced (SpikingJelly 0.14's
            converter silently skips the functional ones).
        levels: L, the number of quantization steps (the SNN then runs T = L steps).
        rounding: ``"floor"``, ``"round"`` (half-up) or ``"ceil"``.
        dataloader: calibration data (tensors or ``(input, target)`` batches). With it, each
            threshold gamma is set to ``percentile`` of that activation's ReLU outputs; without it
            every gamma starts at 1.0 (train or :func:`finetune` next).
        replace_maxpool: max-pooling raises :class:`~sj_qvm.convert.ConversionError` unless this
            is True, in which case it becomes average pooling over the same window.
    Returns:
        An ``fx.GraphModule`` in eval mode, ``[B, *] -> [B, *]`` like ``model``.
    """
    qann = quantize_graph(model, levels, rounding, replace_maxpool)
    if not any(isinstance(m, QuantReLU) for m in qann.modules()):
        raise ConversionError(f"{type(model).__name__} has no ReLU (module or function) to "
                              "quantize")
    if dataloader is not None:
        calibrate(qann, dataloader, percentile, progress)
    return qann.eval()


def finetune(qann: nn.Module, dataloader, epochs: int = 1, lr: float = 1e-3,
             loss_fn: Optional[Callable] = None, progress: bool = True) -> nn.Module:
    """Short quantization-aware fine-tune of ``qann``'s weights and thresholds, in place.

    Post-training quantization at small L loses accuracy; a few epochs of QAT (straight-through
    gradients, see :class:`~sj_qvm.QuantReLU`) win it back. Adam at ``lr``, cross-entropy unless
    ``loss_fn(output, target)`` is given; a tqdm bar shows the running loss.

    Args:
        dataloader: yields ``(input, target)`` batches.
    Returns:
        ``qann`` in eval mode.
    """
    from tqdm.auto import tqdm
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    loss_fn = nn.CrossEntropyLoss() if loss_fn is None else loss_fn
    device = next((p.device for p in qann.parameters()), torch.device("cpu"))
    opt = torch.optim.Adam(qann.parameters(), lr=lr)
    for epoch in range(epochs):
        qann.train()
        total, seen = 0.0, 0
        bar = tqdm(dataloader, desc=f"fine-tune {epoch + 1}/{epochs}", disable=not progress,
                   leave=False)
        for batch in bar:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise TypeError("finetune needs (input, target) batches")
            x, y = batch[0].to(device), batch[1].to(device)
            loss = loss_fn(qann(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():  # a threshold pushed to <= 0 kills its layer for good
                for m in qann.modules():
                    if isinstance(m, QuantReLU):
                        m.threshold.clamp_(min=1e-3)
            total += loss.item() * len(x)
            seen += len(x)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        if progress:
            tqdm.write(f"fine-tune epoch {epoch + 1}/{epochs}: loss {total / max(seen, 1):.4f}")
    return qann.eval()
