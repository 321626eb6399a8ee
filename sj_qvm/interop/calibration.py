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
every later one passing ``relu(x)`` on. Each layer's pass stops at that layer; on a traced model
it also starts where the previous pass stopped (at that layer's cut: its input, or the input of
the layer feeding it when bias correction will change that layer's bias), from the values saved
there for every batch (up to ``cache_bytes``), so a calibration computes about two forward
passes (the float pass and one pass of segments) instead of one per layer, with bit-identical
thresholds. ``sequential=False`` is one pass over the float ANN (every QuantReLU passes
``relu(x)`` on).

``bias_correction`` (default ``None``: on for a sequential calibration of a traced model, which
is what :func:`sj_qvm.quantize` runs) first records, on the float ANN, the per-channel mean of every QuantReLU's
input and of the network output. In the sequential pass, each layer's input mean is then moved back
to the float mean by adding the difference to the bias of the conv / linear / BatchNorm that feeds
it (when it feeds nothing else), before its gamma is chosen; the output layer last.

Output reconstruction (``reconstruct_steps``, default on wherever the output is a ``[B, K, *]``
distribution) then moves the chosen thresholds a few steps towards the float ANN's output
(:mod:`.reconstruction`); bias correction's means are those of the thresholds before it.

Values that are not finite stop the calibration at the first layer (or the output) that records
them, with a ``ValueError`` naming it, the batch index and the cause: NaN or inf in that batch's
input, in the named weights, or (both finite) an overflow in the layers before it.

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
from .bias_correction import add_bias, producer
from .graph_cache import GraphRunner, live_bytes
from .nonfinite import nonfinite_error
from .reconstruction import Targets, default_steps, float_teacher, reconstruct, reconstructable
from .thresholds import Pool, mse_gamma, percentile_gamma, quantization_error


__all__ = ["METHODS", "calibrate", "mse_gamma", "percentile_gamma", "check_calibration_args",
           "batch_input"]

METHODS = ("mse", "percentile", "max")


def check_calibration_args(method, channel_wise, percentile, bias_correction=None,
                           sequential=True, reconstruct_steps=None) -> None:
    """Raise ValueError/TypeError naming the argument and its allowed values."""
    check_choice(method, METHODS, "method")
    if reconstruct_steps is not None:
        check_int(reconstruct_steps, "reconstruct_steps", minimum=0)
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


def _choose(pool: Pool, m: QuantReLU, name: str, method: str, percentile: float,
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


class _OutputPool(Pool):
    """The network output's per-channel mean (for bias correction), noting in ``seen`` for each
    batch whether the output is one reconstruction can distil."""

    def __init__(self, seen: List[bool]):
        super().__init__(0, False)
        self.seen = seen

    def add(self, x, batch_index: int) -> None:
        self.seen.append(reconstructable(x))
        super().add(x, batch_index)


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


class _Run:
    """Each QuantReLU's forward, for the duration of calibration: pass ``relu(x)`` on (not yet
    calibrated), quantize (calibrated), and record its input where asked."""

    def __init__(self, model: nn.Module, sites: List[str], max_samples: int, channel_wise: bool):
        self.model, self.sites = model, sites
        self.max_samples, self.channel_wise = max_samples, channel_wise
        self.quantized: set = set()
        self.record: Dict[str, Pool] = {}
        self.stop_at: Optional[str] = None
        self.batch = 0
        self.input: Optional[torch.Tensor] = None  # this batch's model input, where at hand
        mods = dict(model.named_modules())
        self.wrapped = [mods[s] for s in sites]
        for s, m in zip(sites, self.wrapped):
            # An instance attribute shadows the class's forward (and skips its work when unused).
            m.forward = self._forward(s, type(m).forward.__get__(m))

    def _forward(self, name: str, quantized_forward):
        def forward(x):
            if name in self.record:
                self.add(self.record[name], x, f"QuantReLU {name!r}")
            if name == self.stop_at:
                raise _Stop
            return quantized_forward(x) if name in self.quantized else torch.relu(x)
        return forward

    def add(self, pool: Pool, x: torch.Tensor, where: str) -> None:
        """``pool.add`` for this batch; NaN/inf raise naming ``where``, the batch and the cause."""
        pool.add(x, self.batch)
        if not pool.finite:
            raise nonfinite_error(self.model, where, self.batch, x, self.input)

    def pass_over(self, dataloader, desc: str, progress: bool, record: Dict[str, int],
                  stop_at=None, output_pool: Optional[Pool] = None,
                  targets: Optional[Targets] = None) -> Dict[str, Pool]:
        """One pass; ``record`` maps site names to how many values to keep (0: means only);
        ``output_pool`` and ``targets`` get each batch's output (and input)."""
        self.record = {s: Pool(n, self.channel_wise) for s, n in record.items()}
        self.stop_at = stop_at
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        n = 0
        with torch.no_grad():
            for i, batch in enumerate(tqdm(dataloader, desc=desc, disable=not progress,
                                           leave=False)):
                self.batch, n = i, n + 1
                self.batches = n
                x = self.input = batch_input(batch).to(device)
                try:
                    out = self.model(x)
                except _Stop:
                    continue
                if output_pool is not None and isinstance(out, torch.Tensor):
                    self.add(output_pool, out, "the network output")
                    if targets is not None:
                        targets.add(x, out)
        if n == 0:
            raise ValueError("the calibration dataloader yielded no batch; pass a loader with at "
                             "least one batch of inputs")
        return self.record

    def close(self) -> None:
        for m in self.wrapped:
            del m.forward


class _Resumable:
    """The passes of a :class:`_Run` over a traced model, each resuming where the previous one
    saved the values crossing its cut (:mod:`~sj_qvm.interop.graph_cache`), up to ``cache_bytes``
    of saved values; past that, or where a cut would move backwards, a pass starts from the
    loader again. The cut of a site is its producer when bias correction will change that
    producer's bias, else the site itself."""

    def __init__(self, run: _Run, model: fx.GraphModule, sites: List[str], bias_correction: bool,
                 cache_bytes: int):
        self.run, self.graph, self.budget = run, GraphRunner(model), cache_bytes
        self.cache: Optional[list] = None   # [(batch index, live values)] at node self.at
        self.at = 0
        self.cuts: Dict[str, int] = {}
        for s in sites:
            i = self.graph.site(s)
            if bias_correction and producer(model, s) is not None:
                i = self.graph.index[self.graph.nodes[i].args[0]]
            self.cuts[s] = i

    def _source(self, dataloader, device):
        if self.cache is None:
            for i, batch in enumerate(dataloader):
                yield i, self.graph.start_env(batch_input(batch).to(device))
        else:
            cache, self.cache = self.cache, None
            for j, item in enumerate(cache):
                cache[j] = None  # free what this pass has consumed
                yield item

    def pass_over(self, dataloader, desc: str, progress: bool, record: Dict[str, int],
                  stop_at=None, output_pool: Optional[Pool] = None,
                  targets: Optional[Targets] = None,
                  save_for: Optional[str] = None) -> Dict[str, Pool]:
        """As :meth:`_Run.pass_over`; also saves the values live at ``save_for``'s cut."""
        run = self.run
        run.record = {s: Pool(n, run.channel_wise) for s, n in record.items()}
        run.stop_at = None
        start = self.at if self.cache is not None else 0
        end = len(self.graph.nodes) if stop_at is None else self.graph.site(stop_at) + 1
        save_at = self.cuts[save_for] if save_for is not None else None
        if save_at is not None and not start <= save_at < end:
            save_at = None
        saved, size = ([] if save_at is not None else None), 0
        device = next((p.device for p in run.model.parameters()), torch.device("cpu"))
        n = 0
        with torch.no_grad():
            for i, env in tqdm(self._source(dataloader, device), desc=desc,
                               disable=not progress, leave=False):
                run.batch, n = i, n + 1
                run.batches = n
                x = run.input = env.get(self.graph.placeholder)
                live, out = self.graph.run(env, start, end, save_at)
                if saved is not None:
                    size += live_bytes(live)
                    if size <= self.budget:
                        saved.append((i, live))
                    else:
                        saved = None
                if output_pool is not None and isinstance(out, torch.Tensor):
                    run.add(output_pool, out, "the network output")
                    if targets is not None and x is not None:
                        targets.add(x, out)
        if n == 0:
            raise ValueError("the calibration dataloader yielded no batch; pass a loader with at "
                             "least one batch of inputs")
        self.cache, self.at = saved, (save_at if saved is not None else 0)
        return run.record


def calibrate(model: nn.Module, dataloader, method: str = "mse", channel_wise: bool = True,
              percentile: float = 99.9, sequential: bool = True, bias_correction: Optional[bool] = None,
              max_samples: int = 1 << 20, progress: bool = True,
              cache_bytes: int = 1 << 30,
              reconstruct_steps: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Set every QuantReLU threshold of ``model`` in place from ``dataloader`` (see the module
    docstring); ``{name: gamma}``, gamma ``[]`` or ``[C]``. ``model`` is left in eval mode.

    ``cache_bytes``: how much memory a sequential calibration of a traced model may hold for the
    values crossing the last layer's cut, so that the next pass resumes there instead of
    recomputing the network from the input (0: recompute every pass; the thresholds are the
    same either way, bit for bit).

    ``reconstruct_steps``: after the thresholds are chosen, this many steps of output
    reconstruction (:mod:`~sj_qvm.interop.reconstruction`: the gammas distilled towards the float
    ANN's output); ``None`` (default): a quarter of the calibration batches, wherever the output
    is a ``[B, K, *]`` distribution over dim 1 (none otherwise); 0: none. The float ANN's
    outputs it distils towards are those of the first pass, kept with their inputs for the
    batches it will use (up to ``cache_bytes`` more; over it, a float copy of the model is kept
    and run again on the loader's batches: the same thresholds, for a loader that gives the
    same batches each time)."""
    check_calibration_args(method, channel_wise, percentile, bias_correction, sequential,
                           reconstruct_steps)
    check_int(max_samples, "max_samples", minimum=1)
    check_bool(progress, "progress")
    check_int(cache_bytes, "cache_bytes", minimum=0)
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
    targets = None
    if reconstruct_steps != 0:
        limit = reconstruct_steps
        if limit is None:
            try:
                limit = default_steps(len(dataloader))
            except TypeError:  # a loader without len: keep what the memory bound allows
                pass
        targets = Targets(limit, cache_bytes)
    teacher, kept = None, None
    run = _Run(model, sites, max_samples, channel_wise)
    passes = run
    if sequential and cache_bytes > 0 and isinstance(model, fx.GraphModule) and \
            sum(n.op == "placeholder" for n in model.graph.nodes) == 1:
        passes = _Resumable(run, model, sites, bias_correction, cache_bytes)
    resume = {} if passes is run else {"save_for": None}
    chosen: Dict[str, torch.Tensor] = {}
    try:
        float_means: Dict[str, Optional[torch.Tensor]] = {}
        out_seen: List[bool] = []
        for k, name in enumerate(sites):
            if k == 0 or sequential:
                # The first pass sees the float ANN: it also gives bias correction its targets
                # (and tells reconstruction what the output is).
                everything = k == 0 and (bias_correction or not sequential or
                                         targets is not None)
                keep = {s: (max_samples if s == name or not sequential else 0)
                        for s in (sites if everything else [name])}
                out_pool = _OutputPool(out_seen) if everything else None
                if resume:
                    resume["save_for"] = name
                pools = passes.pass_over(dataloader, f"calibrating {k + 1}/{len(sites)} {name}",
                                         progress, keep, stop_at=None if everything else name,
                                         output_pool=out_pool,
                                         targets=targets if k == 0 else None, **resume)
                if k == 0 and targets is not None:
                    # Still the float ANN: no bias is corrected and no threshold chosen yet.
                    steps = reconstruct_steps or default_steps(run.batches)
                    kept = targets.first(steps, run.batches)
                    targets = None
                    if kept is None and out_seen and all(out_seen):
                        teacher = float_teacher(model)
                if out_pool is not None and bias_correction:
                    float_means = {s: p.mean() for s, p in pools.items()}
                    float_means[None] = out_pool.mean()
            shift = None
            if bias_correction and (layer := producer(model, name)) is not None:
                shift = float_means[name] - pools[name].mean()
                add_bias(layer, shift)
            gamma = _choose(pools[name], mods[name], name, method, percentile, shift)
            with torch.no_grad():
                mods[name].threshold = nn.Parameter(gamma.to(mods[name].threshold))
            chosen[name] = gamma
            run.quantized.add(name)
        if bias_correction and (layer := producer(model, None)) is not None:
            out_pool = Pool(0, False)
            if resume:
                resume["save_for"] = None
            passes.pass_over(dataloader, "calibration: output bias", progress, {},
                             output_pool=out_pool, **resume)
            add_bias(layer, float_means[None] - out_pool.mean())
    finally:
        run.close()
    if reconstruct_steps != 0:
        applies = bool(out_seen) and all(out_seen)
        if reconstruct_steps is not None and not applies:
            raise ValueError(f"reconstruct_steps={reconstruct_steps} needs a model whose output is "
                             "a floating [B, K, *] tensor (K >= 2, a distribution over dim 1); "
                             "pass reconstruct_steps=0 or None")
        if applies:
            reconstruct(model, teacher, dataloader, steps, progress, targets=kept)
            chosen = {name: mods[name].threshold.detach().clone() for name in sites}
    return chosen
