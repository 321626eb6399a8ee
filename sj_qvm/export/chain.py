"""A converted network as the chain of layers that sinabs and DYNAP-CNN take, decided once.

:func:`layer_chain` walks a :class:`~sj_qvm.convert.QVMNetwork`'s per-step graph (θ folded into
the next weights, :mod:`sj_qvm.fold`) and returns its layers in order, each exact against that
per-step form, spike for spike:

* a conv / linear layer: a copy of the folded one. Where every θ of the spiking layer it feeds is
  a power of two, θ is folded into its rows too (``W / θ``, ``b / θ``, V0 / θ: exact scalings),
  and that spiking layer's threshold is 1; elsewhere the threshold stays θ (per channel).
* :class:`Spiking`: the soft-reset IF layer, its V0, threshold and firing rule (``>`` for ceil).
* :class:`TimeMean`: the expected current (eq. 9), where a node or an analog max-pool reads it.
* ``("sumpool", k)``: an average pool of k x k (stride k) with 1 / k^2 folded into the weights
  of the synaptic layer it belongs to (exact when k^2 is a power of two).
* an analog max-pool (before any spiking layer), a flatten, and a :class:`~sj_qvm.fold.ThetaScale`
  where θ could not be folded.

Anything else (a branch that merges, a max-pool on spikes, a pool that no sum pool states) raises
:class:`~sj_qvm.graph.ConversionError` naming the user's line.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

from .. import _compat
from ..convert import QVMNetwork, SpikingActivation
from ..fold import ThetaScale, _is_flatten1, fold_theta
from ..functional import expected_current, matched_v0
from ..graph import ConversionError, qualify
from ..pool import ConvertedMaxPool

__all__ = ["Spiking", "TimeMean", "layer_chain", "is_power_of_two"]

_SYNAPSES = (nn.Conv1d, nn.Conv2d, nn.Linear)


def is_power_of_two(t) -> bool:
    """Whether every value of ``t`` (a float or a tensor) is a (positive) power of two."""
    t = torch.as_tensor(t, dtype=torch.float64)
    mantissa, _ = torch.frexp(t)
    return bool(((t > 0) & (mantissa == 0.5)).all())


@dataclass
class Spiking:
    """One soft-reset IF layer: ``threshold`` and ``v_init`` (V0) are tensors in the network's
    dtype, scalars or shaped to broadcast over one sample ``[C, *]``; ``strict``: fire on
    ``U > threshold`` (ceil);
    ``where``: the converted layer's graph node (for messages)."""

    threshold: torch.Tensor
    v_init: torch.Tensor
    strict: bool
    current: str
    rounding: Optional[str]
    where: str


class TimeMean(nn.Module):
    """The expected current over a sinabs-layout input ``[B*T, *]`` (batch-major): each step
    becomes the T-mean of its sample's steps, computed as the converted network computes it
    (``expected_current`` for a neuron, ``mean(0)`` for an analog max-pool) on ``[T, B, *]``."""

    def __init__(self, time_steps: int, node_mean: bool = True):
        super().__init__()
        self.time_steps, self.node_mean = time_steps, node_mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = self.time_steps
        x_seq = x.reshape(x.shape[0] // T, T, *x.shape[1:]).transpose(0, 1).contiguous()
        q = expected_current(x_seq) if self.node_mean else x_seq.mean(0)
        return q.unsqueeze(1).expand(q.shape[0], T, *q.shape[1:]).flatten(0, 1)

    def extra_repr(self) -> str:
        return f"time_steps={self.time_steps}, node_mean={self.node_mean}"


def _shaped(p, ndim: int):
    """A per-channel ``[C]`` tensor viewed ``[C, 1, ...]`` over a sample of ``ndim`` dims."""
    if isinstance(p, torch.Tensor) and p.ndim == 1 and ndim > 1:
        return p.view(-1, *[1] * (ndim - 1))
    return p


def _scale_rows(layer: nn.Module, f) -> None:
    """Scale the output rows (channels) of a conv / linear layer by ``f`` (float or ``[O]``)."""
    with torch.no_grad():
        w = layer.weight
        fw = f if not isinstance(f, torch.Tensor) else f.to(w).view(-1, *[1] * (w.ndim - 1))
        w.mul_(fw)
        if layer.bias is not None:
            layer.bias.mul_(f if not isinstance(f, torch.Tensor) else f.to(w))


def _square(v) -> Optional[int]:
    v = (v, v) if isinstance(v, int) else tuple(v)
    return v[0] if len(set(v)) == 1 else None


def _pool_size(m: nn.Module, in_shape) -> Optional[int]:
    """k for a pool that is a k x k average with stride k and no padding, else None."""
    if isinstance(m, nn.AvgPool2d):
        k, s = _square(m.kernel_size), _square(m.stride if m.stride is not None else m.kernel_size)
        pad = m.padding if isinstance(m.padding, int) else max(m.padding)
        return k if (k is not None and k == s and pad == 0 and not m.ceil_mode
                     and m.divisor_override is None) else None
    if isinstance(m, nn.AdaptiveAvgPool2d) and in_shape is not None:
        out = _square(tuple(o if o is not None else i for o, i in
                            zip((m.output_size,) * 2 if isinstance(m.output_size, int)
                                else m.output_size, in_shape[-2:])))
        h, w = in_shape[-2:]
        return h // out if out and h == w and h % out == 0 else None
    return None


def layer_chain(snn: QVMNetwork, time_steps: int, input_shape: Optional[Tuple[int, ...]] = None,
                dtype: torch.dtype = torch.float32) -> list:
    """The layers of ``snn`` (module docstring), for input samples of ``input_shape`` ``[C, *]``
    (needed for adaptive pools), in ``dtype``."""
    if not isinstance(snn, QVMNetwork):
        raise TypeError(f"snn must be a QVMNetwork (sj_qvm.convert's result), got "
                        f"{type(snn).__name__}")
    gm = copy.deepcopy(snn.body).to(dtype)
    if not snn.theta_folded:
        fold_theta(gm, lambda m: isinstance(m, SpikingActivation))
    modules = dict(gm.named_modules())
    expected = all(m.node.current == "expected" for m in modules.values()
                   if isinstance(m, SpikingActivation))
    if input_shape is not None:  # one step of one sample, from the reset state
        _compat.reset_net(gm)
        for m in modules.values():
            if isinstance(m, (SpikingActivation, ConvertedMaxPool)):
                m.time_steps, m.per_sample = 1, False
        ShapeProp(gm).propagate(torch.zeros(1, *input_shape, dtype=dtype))
    chain, last_synapse, since_synapse = [], None, False
    pending = 1.0  # a sum pool's 1 / k^2, waiting for the next synaptic layer
    prev = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            prev = node
            continue
        if node.op == "output":
            break
        if node.op == "call_method" and node.target in ("size", "dim"):
            continue
        ins = [a for a in node.all_input_nodes
               if not (a.op == "call_method" and a.target in ("size", "dim"))]
        where = qualify(gm, node)
        if len(ins) != 1 or ins[0] is not prev:
            raise ConversionError(f"{where} merges or skips layers (a residual '+', a 'cat'); "
                                  "sinabs and DYNAP-CNN take a chain of layers (nn.Sequential)")
        prev = node
        m = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(m, _SYNAPSES):
            layer = copy.deepcopy(m)
            if pending != 1.0:
                with torch.no_grad():
                    layer.weight.mul_(pending)
                pending = 1.0
            chain.append(layer)
            last_synapse, since_synapse = layer, True
        elif isinstance(m, SpikingActivation):
            n = m.node
            if n.current == "expected":
                chain.append(TimeMean(time_steps))
            th = n.v_threshold
            th = th.detach().to(dtype) if isinstance(th, torch.Tensor) else float(th)
            mode = n._v_init_mode
            v0 = matched_v0(mode, th)[0] if mode is not None else n._v0
            v0 = v0.detach().to(dtype) if isinstance(v0, torch.Tensor) else float(v0)
            meta = node.args[0].meta.get("tensor_meta")
            sample_ndim = len(meta.shape) - 1 if meta is not None else \
                1 if isinstance(last_synapse, nn.Linear) else \
                (last_synapse.weight.ndim - 1 if last_synapse is not None else 1)
            if since_synapse and is_power_of_two(th):
                _scale_rows(last_synapse, 1.0 / th)
                v0 = v0 / th if isinstance(v0, float) or v0.ndim == 0 or \
                    (isinstance(th, torch.Tensor) and v0.shape == th.shape) else \
                    v0 / _shaped(th, v0.ndim)
                th = 1.0
            as_t = lambda p: torch.as_tensor(_shaped(p, sample_ndim), dtype=dtype)
            chain.append(Spiking(as_t(th), as_t(v0), n.strict, n.current, mode, where))
            since_synapse = False
        elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            shape = node.args[0].meta.get("tensor_meta")
            k = _pool_size(m, tuple(shape.shape) if shape is not None else None)
            if k is None or not is_power_of_two(float(k * k)):
                need = " (pass input_shape)" if isinstance(m, nn.AdaptiveAvgPool2d) and \
                    shape is None else ""
                raise ConversionError(
                    f"{where}: {m} has no exact sum-pooling equivalent{need}; sinabs and "
                    "DYNAP-CNN pool by k x k sums with stride k, and 1/k^2 folds exactly into the "
                    "weights only when k^2 is a power of two")
            chain.append(("sumpool", k))
            if since_synapse:  # pooling an analog current: the synapse before takes 1/k^2
                _scale_rows(last_synapse, 1.0 / (k * k))
            else:
                pending *= 1.0 / (k * k)
        elif isinstance(m, ConvertedMaxPool):
            if m.on_spikes:
                raise ConversionError(
                    f"{where}: a max-pool on spikes needs the leading-count rule "
                    "(sj_qvm.pool), which sinabs cannot state: its SpikingMaxPooling2dLayer "
                    "emits a spike for every neuron that ties the window's count, so it "
                    "overcounts, and DYNAP-CNN pools by sums only")
            if expected:  # as ConvertedMaxPool: the pool of the T-mean, repeated over T
                chain.append(TimeMean(time_steps, node_mean=False))
            chain.append(copy.deepcopy(m.pool))
        elif isinstance(m, ThetaScale):
            chain.append(copy.deepcopy(m))
        elif _is_flatten1(node, modules):
            chain.append(nn.Flatten())
        elif isinstance(m, nn.Identity):
            continue
        else:
            what = type(m).__name__ if m is not None else str(node.target)
            raise ConversionError(f"{where}: {what} has no sinabs equivalent in a chain of "
                                  "layers")
    if pending != 1.0:
        raise ConversionError("the network ends in an average pool with no synaptic layer after "
                              "it to take its 1/k^2")
    return chain
