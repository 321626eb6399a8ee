"""Threshold calibration: choose every QuantReLU's gamma from data, per channel, layer by layer.

Methods (``method=``), each per channel (``channel_wise=True``, channel = dim 1) or per layer:

* ``"mse"``: the gamma minimising the quantization error of that activation over the calibration
  samples, ``E(gamma) = sum_x (a_gamma(x) - relu(x))^2`` with ``a_gamma`` the QuantReLU of eq. 4.
  :func:`mse_gamma` evaluates ``E`` in closed form from the sorted samples (prefix sums), on a grid
  of gamma in ``(0, max]`` refined around its best point, so it costs a sort, not a pass per gamma.
* ``"percentile"``: the ``percentile`` of ``relu(x)`` (zeros included, as SpikingJelly's
  ``VoltageHook``), linear interpolation as ``numpy.percentile``.
* ``"max"``: the largest ``relu(x)``.

``sequential=True`` (default) calibrates layer by layer in graph order: layer i is fitted to the
inputs it will really see, with every earlier QuantReLU already quantized at its chosen gamma and
every later one passing ``relu(x)`` on. Each layer's pass stops at that layer. ``sequential=False``
is one pass over the float ANN (every QuantReLU passes ``relu(x)`` on).

``bias_correction`` (default ``None``: on for a sequential calibration of a traced model, which
is what :func:`sj_qvm.quantize` runs) first records, on the float ANN, the per-channel mean of every QuantReLU's
input and of the network output. In the sequential pass, each layer's input mean is then moved back
to the float mean by adding the difference to the bias of the conv / linear / BatchNorm that feeds
it (when it feeds nothing else), before its gamma is chosen; the output layer last.

Deterministic: the same model and loader (same batches in the same order) give bit-identical
thresholds. Memory is bounded: each layer keeps at most ``max_samples`` values, a batch with too
many contributes a subsample of positions drawn by a ``torch.Generator`` seeded with the batch index
(the same positions for every channel), and a full pool is thinned to every second position.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.fx as fx
import torch.nn as nn
from tqdm.auto import tqdm

from ..checks import check_bool, check_choice, check_fraction, check_int
from ..quant import QuantReLU

__all__ = ["METHODS", "calibrate", "mse_gamma", "percentile_gamma", "check_calibration_args",
           "batch_input"]

METHODS = ("mse", "percentile", "max")
_GRID, _TOP, _REFINE = 256, 4, 64


def check_calibration_args(method, channel_wise, percentile, bias_correction=None,
                           sequential=True) -> None:
    """Raise ValueError/TypeError naming the argument and its allowed values."""
    check_choice(method, METHODS, "method")
    check_bool(channel_wise, "channel_wise")
    check_bool(sequential, "sequential")
    if bias_correction is not None and not isinstance(bias_correction, bool):
        raise TypeError(f"bias_correction must be None (automatic), True or False, got "
                        f"{bias_correction!r}")
    check_fraction(percentile, "percentile", 0, 100)


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


class _Pool:
    """A bounded sample of one activation ``x: [B, C, *]``: kept values ``[C, S]`` (the same S
    positions in every channel) and the per-channel mean of ``x`` over all positions, for bias
    correction. ``channel_wise=False`` pools the C rows into one when read."""

    def __init__(self, max_samples: int, channel_wise: bool):
        # max_samples = 0 keeps only the channel means.
        self.max_samples, self.channel_wise = max_samples, channel_wise
        self.chunks: List[torch.Tensor] = []
        self.cols = 0
        self.per_batch: Optional[int] = None
        self.sum: Optional[torch.Tensor] = None
        self.count = 0

    def add(self, x: torch.Tensor, batch_index: int) -> None:
        x = x.detach()
        per_channel = x.movedim(1, 0).reshape(x.shape[1], -1) if x.ndim >= 2 else x.reshape(1, -1)
        s = per_channel.sum(1, dtype=torch.float64).cpu()
        self.sum = s if self.sum is None else self.sum + s
        self.count += per_channel.shape[1]
        if self.max_samples == 0:
            return
        v = per_channel
        rows = v.shape[0]
        budget = max(1, self.max_samples // rows)
        if self.per_batch is None:
            self.per_batch = max(1, budget // 4)
        if v.shape[1] > self.per_batch:
            g = torch.Generator().manual_seed(batch_index)
            v = v[:, torch.randint(v.shape[1], (self.per_batch,), generator=g, device="cpu")
                  .to(v.device)]
        self.chunks.append(v.to(torch.float32).cpu())
        self.cols += v.shape[1]
        while self.cols > budget:
            self.chunks = [c[:, ::2] for c in self.chunks]
            self.cols = sum(c.shape[1] for c in self.chunks)
            self.per_batch = max(1, self.per_batch // 2)

    def mean(self) -> torch.Tensor:
        return self.sum / max(self.count, 1)

    def values(self, shift: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``relu`` of the kept values after adding ``shift: [C]``: ``[C, S]`` float64 per channel,
        ``[1, C*S]`` per layer."""
        if not self.chunks:
            raise ValueError("no calibration activations were recorded")
        v = torch.cat(self.chunks, 1).to(torch.float64)
        if shift is not None:
            v = v + shift.view(-1, 1)
        v = v.clamp_(min=0)
        return v if self.channel_wise else v.reshape(1, -1)


def _level_counts(xs: torch.Tensor, gamma: torch.Tensor, levels: int, rounding: str):
    """``(sum_x M(x) * x, sum_x M(x)^2)`` for sorted ``xs: [C, S]`` and ``gamma: [C, K]``."""
    C, S = xs.shape
    delta = (gamma / levels).unsqueeze(-1)                                   # [C, K, 1]
    k = torch.arange(1, levels + 1, dtype=xs.dtype, device=xs.device)        # [L]
    offset = {"floor": 0.0, "round": -0.5, "ceil": -1.0}[rounding]
    bounds = (k + offset) * delta                                            # [C, K, L]
    # M(x) = #{k : x >= b_k} (floor, round half-up) or #{k : x > b_k} (ceil).
    below = torch.searchsorted(xs, bounds.reshape(C, -1), right=rounding == "ceil")
    below = below.reshape(bounds.shape)
    p1 = torch.cat([xs.new_zeros(C, 1), xs.cumsum(1)], 1)                    # [C, S + 1]
    tail = p1[:, -1:].unsqueeze(-1) - torch.gather(p1, 1, below.reshape(C, -1)).reshape(below.shape)
    sum_mx = tail.sum(-1)                                                    # [C, K]
    sum_m2 = ((2 * k - 1) * (S - below)).sum(-1)                             # [C, K]
    return sum_mx, sum_m2


def quantization_error(xs: torch.Tensor, gamma: torch.Tensor, levels: int, rounding: str):
    """``E(gamma) - sum x^2`` for sorted ``xs: [C, S] >= 0`` and candidate ``gamma: [C, K]``."""
    sum_mx, sum_m2 = _level_counts(xs, gamma, levels, rounding)
    delta = gamma / levels
    return delta * delta * sum_m2 - 2 * delta * sum_mx


def mse_gamma(values: torch.Tensor, levels: int, rounding: str) -> torch.Tensor:
    """Per row of ``values: [C, S]`` (``relu`` outputs), the gamma minimising the quantization
    error, ``[C]`` float64; 0 where a row holds only zeros.

    ``E(gamma)`` is piecewise smooth with a kink wherever a level boundary crosses a sample, so
    the search keeps the ``_TOP`` best points of a ``_GRID``-point grid on ``(0, max]`` and
    searches ``_REFINE`` points around each.
    """
    xs = values.to(torch.float32).sort(1).values.to(torch.float64)
    top = xs[:, -1:]
    r = torch.arange(1, _GRID + 1, dtype=xs.dtype) / _GRID
    err = quantization_error(xs, top * r, levels, rounding)
    best = err.topk(min(_TOP, _GRID), dim=1, largest=False).indices.to(xs.dtype) + 1  # [C, TOP]
    lo = (best - 1).clamp(min=0.25) / _GRID
    hi = (best + 1).clamp(max=_GRID) / _GRID
    t = torch.linspace(0, 1, _REFINE + 1, dtype=xs.dtype)
    fine = (lo.unsqueeze(-1) + (hi - lo).unsqueeze(-1) * t).flatten(1)           # [C, TOP*R]
    cand = torch.cat([top * fine, top * best / _GRID], 1)
    pick = quantization_error(xs, cand, levels, rounding).argmin(1, keepdim=True)
    return torch.gather(cand, 1, pick).squeeze(1)


def percentile_gamma(values: torch.Tensor, q: float) -> torch.Tensor:
    """Per row of ``values: [C, S]``, its ``q``-th percentile (numpy's linear interpolation)."""
    xs = values.sort(1).values
    pos = q / 100.0 * (xs.shape[1] - 1)
    lo = int(pos)
    hi = min(lo + 1, xs.shape[1] - 1)
    return xs[:, lo] + (xs[:, hi] - xs[:, lo]) * (pos - lo)


def _choose(pool: _Pool, m: QuantReLU, name: str, method: str, percentile: float,
            shift: Optional[torch.Tensor]) -> torch.Tensor:
    v = pool.values(shift)
    if method == "mse":
        gamma = mse_gamma(v, m.levels, m.rounding)
    else:
        gamma = percentile_gamma(v, 100.0 if method == "max" else percentile)
        # Below the percentile everything is 0: fall back to the largest activation seen.
        gamma = torch.where(gamma > 0, gamma, v.amax(1))
    live = gamma > 0
    if not live.any():
        raise ValueError(f"QuantReLU '{name}' saw only zeros during calibration: the layer is "
                         "dead on this data; check the ANN or the calibration loader")
    # A dead channel never fires whatever its gamma; give it the median of the live ones.
    gamma = torch.where(live, gamma, gamma[live].median())
    return gamma if pool.channel_wise and gamma.numel() > 1 else gamma.reshape(())


class _Stop(Exception):
    """Raised by the recording hook: the rest of the forward pass is not needed."""


def _quant_sites(model: nn.Module) -> List[str]:
    """QuantReLU module names in graph (call) order."""
    if isinstance(model, fx.GraphModule):
        mods = dict(model.named_modules())
        seen: List[str] = []
        for n in model.graph.nodes:
            if n.op == "call_module" and isinstance(mods[n.target], QuantReLU) \
                    and n.target not in seen:
                seen.append(n.target)
        return seen
    return [n for n, m in model.named_modules() if isinstance(m, QuantReLU)]


def _producer(model: nn.Module, name: Optional[str]) -> Optional[nn.Module]:
    """The conv / linear / affine BatchNorm feeding QuantReLU ``name`` (or the output if None)
    and nothing else, whose bias can take a per-channel correction."""
    if not isinstance(model, fx.GraphModule):
        return None
    mods = dict(model.named_modules())
    for n in model.graph.nodes:
        if name is None and n.op == "output":
            src = n.args[0]
        elif name is not None and n.op == "call_module" and n.target == name:
            src = n.args[0]
        else:
            continue
        if isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1:
            m = mods[src.target]
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                return m
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                return m
        return None
    return None


def _add_bias(layer: nn.Module, delta: torch.Tensor) -> None:
    with torch.no_grad():
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(delta.numel(), dtype=layer.weight.dtype,
                                                  device=layer.weight.device))
        layer.bias.add_(delta.to(layer.bias))


class _Run:
    """Each QuantReLU's forward, for the duration of calibration: pass ``relu(x)`` on (not yet
    calibrated), quantize (calibrated), and record its input where asked."""

    def __init__(self, model: nn.Module, sites: List[str], max_samples: int, channel_wise: bool):
        self.model, self.sites = model, sites
        self.max_samples, self.channel_wise = max_samples, channel_wise
        self.quantized: set = set()
        self.record: Dict[str, _Pool] = {}
        self.stop_at: Optional[str] = None
        self.batch = 0
        mods = dict(model.named_modules())
        self.wrapped = [mods[s] for s in sites]
        for s, m in zip(sites, self.wrapped):
            # An instance attribute shadows the class's forward (and skips its work when unused).
            m.forward = self._forward(s, type(m).forward.__get__(m))

    def _forward(self, name: str, quantized_forward):
        def forward(x):
            if name in self.record:
                self.record[name].add(x, self.batch)
            if name == self.stop_at:
                raise _Stop
            return quantized_forward(x) if name in self.quantized else torch.relu(x)
        return forward

    def pass_over(self, dataloader, desc: str, progress: bool, record: Dict[str, int],
                  stop_at=None, output_pool: Optional[_Pool] = None) -> Dict[str, _Pool]:
        """One pass; ``record`` maps site names to how many values to keep (0: means only)."""
        self.record = {s: _Pool(n, self.channel_wise) for s, n in record.items()}
        self.stop_at = stop_at
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        n = 0
        with torch.no_grad():
            for i, batch in enumerate(tqdm(dataloader, desc=desc, disable=not progress,
                                           leave=False)):
                self.batch, n = i, n + 1
                try:
                    out = self.model(batch_input(batch).to(device))
                except _Stop:
                    continue
                if output_pool is not None and isinstance(out, torch.Tensor):
                    output_pool.add(out, i)
        if n == 0:
            raise ValueError("the calibration dataloader yielded no batch; pass a loader with at "
                             "least one batch of inputs")
        return self.record

    def close(self) -> None:
        for m in self.wrapped:
            del m.forward


def calibrate(model: nn.Module, dataloader, method: str = "mse", channel_wise: bool = True,
              percentile: float = 99.9, sequential: bool = True, bias_correction: Optional[bool] = None,
              max_samples: int = 1 << 20, progress: bool = True) -> Dict[str, torch.Tensor]:
    """Set every QuantReLU threshold of ``model`` in place from ``dataloader`` (see the module
    docstring); ``{name: gamma}``, gamma ``[]`` or ``[C]``. ``model`` is left in eval mode."""
    check_calibration_args(method, channel_wise, percentile, bias_correction, sequential)
    check_int(max_samples, "max_samples", minimum=1)
    check_bool(progress, "progress")
    if bias_correction is None:  # on wherever it applies
        bias_correction = sequential and isinstance(model, fx.GraphModule)
    if bias_correction and not (sequential and isinstance(model, fx.GraphModule)):
        raise ValueError("bias_correction=True needs sequential=True and a traced model "
                         "(the output of sj_qvm.quantize)")
    sites = _quant_sites(model)
    if not sites:
        raise ValueError(f"{type(model).__name__} holds no QuantReLU to calibrate")
    mods = dict(model.named_modules())
    model.eval()
    run = _Run(model, sites, max_samples, channel_wise)
    chosen: Dict[str, torch.Tensor] = {}
    try:
        float_means: Dict[str, Optional[torch.Tensor]] = {}
        for k, name in enumerate(sites):
            if k == 0 or sequential:
                # The first pass sees the float ANN: it also gives bias correction its targets.
                everything = k == 0 and (bias_correction or not sequential)
                keep = {s: (max_samples if s == name or not sequential else 0)
                        for s in (sites if everything else [name])}
                out_pool = _Pool(0, False) if everything and bias_correction else None
                pools = run.pass_over(dataloader, f"calibrating {k + 1}/{len(sites)} {name}",
                                      progress, keep, stop_at=None if everything else name,
                                      output_pool=out_pool)
                if out_pool is not None:
                    float_means = {s: p.mean() for s, p in pools.items()}
                    float_means[None] = out_pool.mean()
            shift = None
            if bias_correction and (layer := _producer(model, name)) is not None:
                shift = float_means[name] - pools[name].mean()
                _add_bias(layer, shift)
            gamma = _choose(pools[name], mods[name], name, method, percentile, shift)
            with torch.no_grad():
                mods[name].threshold = nn.Parameter(gamma.to(mods[name].threshold))
            chosen[name] = gamma
            run.quantized.add(name)
        if bias_correction and (layer := _producer(model, None)) is not None:
            out_pool = _Pool(0, False)
            run.pass_over(dataloader, "calibration: output bias", progress, {},
                          output_pool=out_pool)
            _add_bias(layer, float_means[None] - out_pool.mean())
    finally:
        run.close()
    return chosen
