"""ANN with QuantReLU activations -> SpikingJelly multi-step SNN (Algorithm 1 of the paper).

The SNN runs the ANN's own graph (traced with ``torch.fx``, BatchNorm folded). Every synaptic op
(conv, linear, folded BN, pooling, ``+``, ``cat``, reshape) is affine, so the mean over T of its
outputs is its output on the mean of its inputs. Two schedules run the same graph:

* ``"per_sample"`` (the default for ``current="expected"``; Algorithm 1 as the paper writes it):
  each synaptic layer runs once per sample, ``[B, *]``, on the T-mean of its input (for the first
  layer the mean frame). Each ``QuantReLU`` becomes a :class:`SpikingActivation` that turns that
  constant current q into its T-step spike train (the IF loop on q broadcast over T, no copies)
  and passes on ``theta * N / T``, the next layer's mean input ``q^l = W^l N^{l-1} theta^{l-1} / T``.
* ``"per_step"`` (the reference twin, and the only schedule for ``current="instant"``, whose input
  changes per step): time-folded tensors ``[T*B, *]``; each activation unfolds ``[T, B, *]``, runs
  the node (which averages its T inputs in expected mode) and passes on ``theta * s_t``; by
  default (``fold_theta``) θ is folded into the next conv/linear weights instead, and the layer
  passes on its binary spikes ``s_t`` (:mod:`sj_qvm.fold`).
"""
from __future__ import annotations

import copy
import warnings
from typing import Optional

import torch
import torch.fx as fx
import torch.nn as nn

from . import _compat
from .checks import check_bool, check_choice, check_current, check_levels, check_step_mode
from .fold import fold_theta as fold
from .functional import expected_current
from .graph import (ConversionError, QVMTracer, check_model, fold_batchnorm, qualify,  # noqa: F401
                    set_submodule, trace)
from .neuron import QVMIFNode
from .ops import paths
from .ops.if_rate import dispatch as if_rate
from .ops.if_loop.cpu import spike_rate
from .pool import ConvertedMaxPool
from .quant import QuantReLU, channel_view
from .supported import MAX_POOLS, check_node

__all__ = ["convert", "QVMNetwork", "SpikingActivation", "trace", "ConversionError", "SCHEDULES"]

SCHEDULES = ("per_sample", "per_step")


class _MultiStepOnly(_compat.StepModule):
    """A SpikingJelly step module that runs multi-step only: ``step_mode`` reads ``"m"`` and
    refuses ``"s"``. This is the one place a converted network's step mode is decided."""

    def supported_step_mode(self):
        return ("m",)

    @property
    def step_mode(self) -> str:
        return "m"

    @step_mode.setter
    def step_mode(self, value) -> None:
        if check_step_mode(value) != "m":
            raise ValueError(f"step_mode must be 'm' for a {type(self).__name__}: a converted QVM "
                             "network is multi-step only (x_seq: [T, B, *]); got 's'")


class SpikingActivation(nn.Module, _MultiStepOnly):
    """A converted QuantReLU. ``time_steps`` and ``per_sample`` are set by :class:`QVMNetwork`
    for each forward, from its input.

    * per-step schedule: ``[T*B, *] -> [T*B, *]``; unfolds to ``[T, B, *]``, runs ``node`` (a
      multi-step :class:`QVMIFNode`) and returns ``theta * s_t``, folded back; with ``binary``
      (θ folded into the next layers, :mod:`sj_qvm.fold`) the spikes ``s_t`` themselves.
    * per-sample schedule: ``q: [B, *] -> [B, *]``; ``q`` is the constant (expected) current.
      Runs ``node`` on ``q`` broadcast over T (a view: the node sees a ``[T, B, *]`` input whose
      steps are all q, and its output, ``v`` and ``v_seq`` are those of T steps of q) and returns
      ``N * theta / T`` with ``N = sum_t s_t``, in the order the ANN computes ``M * gamma / L``,
      so that N == M gives the ANN's activation bit for bit. When nothing observes the node's
      spike train (no hooks, see :meth:`_rate_unobserved`) the compiled kernel counts the
      spikes without writing the train, with the same N, V_T and output.
    """

    def __init__(self, node: QVMIFNode):
        super().__init__()
        if not isinstance(node, QVMIFNode) or node.step_mode != "m":
            raise ValueError("SpikingActivation needs a multi-step QVMIFNode (step_mode='m'), got "
                             f"{type(node).__name__} step_mode={getattr(node, 'step_mode', None)!r}")
        self.node = node
        self.time_steps = 1
        self.per_sample = False
        self.binary = False  # set by sj_qvm.fold.fold_theta: theta lives in the next weights
        self.folded_theta = None

    def _theta(self, like: torch.Tensor):
        th = self.node.v_threshold
        if isinstance(th, torch.Tensor):
            th = channel_view(th.to(like.dtype), like.ndim)
        return th

    def _rate_unobserved(self, x: torch.Tensor, T: int) -> Optional[torch.Tensor]:
        """``N * theta / T`` without the ``[T, B, *]`` spike train, when nothing can observe the
        train (no hook on the node, no ``store_v_seq``, no autograd) and the node's backend
        selects a compiled counting kernel for ``x`` (:mod:`sj_qvm.ops.if_rate`: the CUDA one
        for CUDA inputs, the C one for CPU inputs). The node's ``v`` and ``last_dispatch`` are
        updated as by its own forward (``v`` fp32 from the CUDA kernel, as there). ``None``
        otherwise (the node then runs as usual)."""
        node = self.node
        if (node._forward_hooks or node._forward_pre_hooks or _global_hooks()
                or node.store_v_seq or node.needs_grad(x)):
            return None
        rounding = node.v_init if isinstance(node.v_init, str) else None
        v0, th = node.kernel_inputs(x)
        # As the node's own forward would choose (an explicit backend that cannot run raises).
        path, reason = if_rate.select(node.backend, x, v0, th, strict=node.strict,
                                      rounding=rounding)
        if path == "torch":
            return None
        if path == "cupy":
            v0, th = node.kernel_inputs(x, dtype=torch.float32)
        out, node.v = if_rate.run(path, x, T, v0, th, node.strict)
        node.last_dispatch = (path, f"{reason}; per-sample layer, spike train unobserved: "
                                    "counts only")
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = self.time_steps
        if self.node.step_mode != "m":
            raise ValueError(f"this converted layer's node was switched to step_mode="
                             f"{self.node.step_mode!r}; a QVMNetwork runs every node multi-step "
                             "(x_seq: [T, B, *]). Set it back with node.step_mode = 'm'")
        if self.per_sample:
            out = self._rate_unobserved(x, T)
            if out is not None:
                return out
            spikes = self.node(x.unsqueeze(0).expand(T, *x.shape))
            return spike_rate(spikes, self._theta(x), compiled=self.node.last_dispatch[0] == "cpu")
        spikes = self.node(x.reshape(T, x.shape[0] // T, *x.shape[1:]))
        spikes = spikes.flatten(0, 1)
        if not self.binary:
            return spikes * self._theta(spikes)
        th, folded = self.node.v_threshold, self.folded_theta
        if not (torch.equal(torch.as_tensor(th), folded.to(th)) if isinstance(folded, torch.Tensor)
                else float(th) == folded):
            raise ValueError(f"v_threshold changed from {folded} to {th} after convert folded "
                             "theta into the next layer's weights; convert the ANN again, or "
                             "with fold_theta=False")
        return spikes


class QVMNetwork(nn.Module, _MultiStepOnly):
    """A converted SNN: ``x_seq: [T, B, *] -> y_seq: [T, B, *]``; the logits are ``y_seq.mean(0)``.

    Call ``spikingjelly.activation_based.functional.reset_net(snn)`` between input sequences, as
    for any SpikingJelly network. ``levels`` is the design L: the T at which the SNN reproduces
    the ANN (None when the ANN's QuantReLUs differ in L, so that no T is exact). Each forward
    takes its T from ``x_seq``; other T run too, without the exactness guarantee.

    The network and its layers are multi-step only: ``step_mode`` is ``"m"``, and
    ``functional.set_step_mode(snn, "s")`` raises instead of leaving it half switched.

    ``schedule`` (see the module docstring): ``"per_sample"`` runs the graph once on the mean
    input ``[B, *]`` whenever every spiking node is in expected mode (else, e.g. while
    :func:`~sj_qvm.analysis.conversion_report` runs the nodes in instant mode, per step). Its
    ``y_seq`` is then the network's expected output repeated over T (a broadcast view): every
    step equals ``y_seq.mean(0)``, the per-step schedule's logits. ``"per_step"`` gives each
    step's own output.
    """

    def __init__(self, body: fx.GraphModule, levels: Optional[int], schedule: str = "per_step"):
        super().__init__()
        self.body = body
        self.levels = None if levels is None else check_levels(levels)
        self.schedule = _check_schedule(schedule, "expected")
        self.theta_folded = False  # set by convert; a folded network runs per step only

    @property
    def time_steps(self) -> Optional[int]:
        """Read-only, the old name of :attr:`levels` (the T = L at which the SNN is exact)."""
        return self.levels

    def spiking_layers(self):
        """``(name, SpikingActivation)`` pairs in graph order."""
        return [(n, m) for n, m in self.body.named_modules() if isinstance(m, SpikingActivation)]

    def _max_pools(self):
        return [m for m in self.body.modules() if isinstance(m, ConvertedMaxPool)]

    def _input_ndim(self):
        """``(ndim, exact)`` that ``x_seq`` needs when the first op says: a conv needs its batched
        input's ndim plus T exactly, a linear layer at least ``[T, B, F]``; else ``(2, False)``."""
        for node in self.body.graph.nodes:
            if node.op != "placeholder":
                break
            for user in node.users:
                if user.op == "call_module":
                    m = self.body.get_submodule(user.target)
                    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                        return m.weight.ndim + 1, True  # weight [O, I, *k]; x_seq [T, B, C, *k]
                    if isinstance(m, nn.Linear):
                        return 3, False
            break
        return 2, False

    def forward(self, x_seq: torch.Tensor):
        want = "x_seq: [T, B, *] (time-steps first, T >= 1, then the ANN's input [B, *])"
        if not isinstance(x_seq, torch.Tensor) or x_seq.ndim < 2 or x_seq.shape[0] == 0:
            got = tuple(x_seq.shape) if isinstance(x_seq, torch.Tensor) else type(x_seq).__name__
            raise ValueError(f"QVMNetwork input must be {want}; got {got}")
        ndim, exact = self._input_ndim()
        if x_seq.ndim < ndim or (exact and x_seq.ndim != ndim):
            hint = (": it lacks the T dimension; a static input x runs as "
                    "x.unsqueeze(0).repeat(T, *[1] * x.ndim)" if x_seq.ndim == ndim - 1 else "")
            raise ValueError(f"QVMNetwork input must be {want}, {'' if exact else 'at least '}"
                             f"{ndim} dims for this network's first layer; got shape "
                             f"{tuple(x_seq.shape)}{hint}")
        T, B = x_seq.shape[:2]
        layers = [m for _, m in self.spiking_layers()]
        # a host IF node (after to_spikingjelly) integrates each step's own input
        expected = all(getattr(m.node, "current", "instant") == "expected" for m in layers)
        per_sample = self.schedule == "per_sample" and not self.theta_folded and expected
        for m in layers:
            m.time_steps, m.per_sample = T, per_sample
        for m in self._max_pools():
            m.time_steps, m.per_sample, m.expected = T, per_sample, expected
        try:
            if per_sample:
                out = self.body(expected_current(x_seq))
            else:
                out = self.body(x_seq.flatten(0, 1))
        except RuntimeError as e:
            e.add_note(f"QVMNetwork's input x_seq had shape {tuple(x_seq.shape)}; it must be {want}")
            raise
        if per_sample:
            unfold = lambda y: (y.unsqueeze(0).expand(T, *y.shape) if isinstance(y, torch.Tensor)
                                else y)
        else:
            unfold = lambda y: y.reshape(T, B, *y.shape[1:]) if isinstance(y, torch.Tensor) else y
        if isinstance(out, (tuple, list)):
            return type(out)(unfold(y) for y in out)
        return unfold(out)


def _global_hooks() -> bool:
    """Whether any global module forward hook is registered (it would observe the node)."""
    m = nn.modules.module
    return bool(getattr(m, "_global_forward_hooks", None)
                or getattr(m, "_global_forward_pre_hooks", None))


def _check_schedule(schedule, current: str) -> str:
    """The one check of ``convert``'s ``schedule`` argument (``None``: the default for ``current``)."""
    if schedule is None:
        return "per_sample" if current == "expected" else "per_step"
    check_choice(schedule, SCHEDULES, "schedule")
    if schedule == "per_sample" and current != "expected":
        raise ValueError("schedule='per_sample' needs current='expected' (an instant current "
                         "changes every step); use schedule='per_step' or None")
    return schedule


def _levels_of(ann: nn.Module) -> dict:
    return {name: m.levels for name, m in ann.named_modules() if isinstance(m, QuantReLU)}


def convert(ann: nn.Module, time_steps: Optional[int] = None, current: str = "expected", *,
            warn: bool = True, schedule: Optional[str] = None,
            fold_theta: Optional[bool] = None, backend: str = "auto") -> QVMNetwork:
    """Convert an ANN with :class:`~sj_qvm.QuantReLU` activations into a QVM SNN.

    Args:
        ann: the trained ANN (left untouched; a copy is converted in eval mode).
        time_steps: T; defaults to the ANN's ``levels`` L (which must then agree across layers).
        current: ``"expected"`` (each neuron receives the mean of its T inputs, exact at T = L) or
            ``"instant"`` (streaming; leaves an unevenness error).
        warn: warn when T differs from the levels (exactness needs T = L); sweeps over T that
            know this pass ``False``.
        schedule: ``"per_sample"`` (synaptic layers once per sample on the mean input; the
            default, ``None``, for ``current="expected"``) or ``"per_step"`` (time-folded, T times
            the synaptic work; the reference twin and the default for ``"instant"``).
        fold_theta: per-step schedule only (``None``: True there, False per sample): fold each
            spiking layer's θ into the weights of the conv/linear layers it feeds, so that
            layers exchange binary spikes (:mod:`sj_qvm.fold`); ``False`` keeps ``theta * s_t``,
            the reference twin. θ stays on each node as ``v_threshold``.
        backend: every spiking node's ``backend`` (:mod:`sj_qvm.ops.paths`): ``"auto"``,
            ``"torch"`` (pure PyTorch, also for the per-sample rate), ``"cpu"`` or ``"cupy"``
            (raise when their kernels cannot run); each node's ``last_dispatch`` says which ran.
    Returns:
        :class:`QVMNetwork`, input ``[T, B, *]``, output ``[T, B, *]``. At T = L in expected mode
        every neuron's spike count equals the ANN's integer level and ``out.mean(0)`` equals the
        ANN's output (up to float rounding of the synaptic sums).
    Raises:
        ConversionError (a ValueError) naming the op and its place in the graph for any op with no
        exact spiking equivalent (AdaptiveMaxPool, plain ReLU, GELU, ...); nn.MaxPool1d/2d/3d
        convert exactly (:class:`sj_qvm.pool.ConvertedMaxPool`).
    """
    check_model(ann)
    check_current(current)
    check_bool(warn, "warn")
    paths.check_backend(backend)
    levels = _levels_of(ann)
    if not levels:
        raise ConversionError("the ANN has no QuantReLU activation; train it with sj_qvm.QuantReLU "
                              "or run sj_qvm.quantize(ann) first")
    distinct = sorted(set(levels.values()))
    if time_steps is None:
        if len(distinct) > 1:
            raise ValueError(f"QuantReLU levels differ across layers ({levels}); pass time_steps "
                             "explicitly (exactness needs T = L in every layer)")
        time_steps = distinct[0]
    time_steps = check_levels(time_steps, "time_steps")
    if warn and any(L != time_steps for L in distinct):
        warnings.warn(f"time_steps={time_steps} differs from the QuantReLU levels {distinct}: "
                      "the SNN will not be exact (QVM needs T = L)", stacklevel=2)

    schedule = _check_schedule(schedule, current)
    if fold_theta is None:
        fold_theta = schedule == "per_step"
    if check_bool(fold_theta, "fold_theta") and schedule != "per_step":
        raise ValueError("fold_theta=True needs schedule='per_step': the per-sample schedule "
                         "passes N * theta / T in the ANN's order, which a folded weight breaks")

    model = copy.deepcopy(ann).eval()
    gm = trace(model)
    fold_batchnorm(gm)
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        check_node(gm, node, modules)
    calls: dict = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = modules[node.target]
        if isinstance(m, QuantReLU):
            # A QuantReLU called at several places (``self.relu`` reused) gets one stateful
            # neuron layer per call site.
            k = calls[node.target] = calls.get(node.target, -1) + 1
            if k:
                node.target = f"{node.target}_call{k}"
            gamma = m.threshold.detach()
            if not (torch.isfinite(gamma).all() and (gamma > 0).all()):
                raise ConversionError(f"QuantReLU '{node.target}' has threshold {gamma.tolist()}: "
                                      "it must be finite and > 0 (the layer is dead; see the "
                                      "threshold initialisation advice in QuantReLU)")
            theta = gamma.item() if gamma.ndim == 0 else gamma.clone()
            node_ = QVMIFNode(v_threshold=theta, v_init=m.rounding, current=current, step_mode="m",
                              backend=backend)
            set_submodule(gm, node.target, SpikingActivation(node_))
        elif type(m) in MAX_POOLS:
            src = node.args[0]
            on_spikes = (isinstance(src, fx.Node) and src.op == "call_module"
                         and isinstance(gm.get_submodule(src.target), SpikingActivation))
            set_submodule(gm, node.target, ConvertedMaxPool(m, on_spikes))
        elif isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d)):
            set_submodule(gm, node.target, nn.Identity())
    gm.recompile()
    if fold_theta:
        fold(gm, lambda m: isinstance(m, SpikingActivation))
    snn = QVMNetwork(gm, distinct[0] if len(distinct) == 1 else None, schedule).eval()
    snn.theta_folded = fold_theta
    _compat.invalidate_reset_cache(snn)
    return snn
