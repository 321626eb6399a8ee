"""``check_dynapcnn``: which DYNAP-CNN (Speck) constraints a converted network breaks, one line
each, and with ``quantize_weights`` an integer version that keeps them, beside its exact ANN.

The chip's limits, as sinabs's DYNAP-CNN backend (``sinabs.backend.dynapcnn``) states them:
9 layers (cores), each a square conv (a linear layer maps to one) -> integrate-and-fire with one
threshold per layer -> optional square sum pooling; weights and biases 8-bit signed integers;
thresholds and membrane states (``neurons_initial_value``, V0) 16-bit signed integers; firing on
``v >= threshold``, each event integrated as it arrives (the instant current); the sensor input
at most 128 x 128 pixels. Its own validation needs the chip runtime (samna), so it is restated
here and needs neither sinabs nor samna.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
import torch.nn as nn

from ..checks import check_levels
from ..convert import QVMNetwork
from ..fold import ThetaScale
from ..quant import QuantReLU
from .chain import Spiking, TimeMean, layer_chain

__all__ = ["DYNAPCNN", "DynapcnnCheck", "check_dynapcnn"]

#: The DYNAP-CNN limits checked (sinabs.backend.dynapcnn: discretize.py, chips/dynapcnn.py).
DYNAPCNN = {"layers": 9, "weight_bits": 8, "state_bits": 16, "pool_sizes": (1, 2, 4),
            "input_pixels": 128}


@dataclass
class DynapcnnCheck:
    """``problems``: one line per broken constraint (empty: none). With ``quantize_weights``:
    ``sinabs``, the integer network (what :func:`~sj_qvm.export.to_sinabs` would build from it),
    ``ann``, its exact ANN (QuantReLU; ``sj_qvm.convert(ann)`` fires the same spikes on integer
    inputs), and ``problems`` are those the integer network still has."""

    problems: List[str] = field(default_factory=list)
    sinabs: Optional[nn.Module] = None
    ann: Optional[nn.Module] = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _is_int(t: torch.Tensor, bits: int) -> bool:
    lim = 2 ** (bits - 1)
    return bool((t == t.round()).all() and (t >= -lim).all() and (t <= lim - 1).all())


def _problems(chain: list, input_shape, integer_input: bool) -> List[str]:
    out, cores = [], sum(isinstance(c, Spiking) for c in chain)
    if cores > DYNAPCNN["layers"]:
        out.append(f"layer count: {cores} spiking layers; DYNAP-CNN has {DYNAPCNN['layers']} cores")
    if len(input_shape) != 3 or max(input_shape[1:]) > DYNAPCNN["input_pixels"]:
        out.append(f"input size: {tuple(input_shape)}; DYNAP-CNN takes [C, H, W] with H, W <= "
                   f"{DYNAPCNN['input_pixels']}")
    wb, sb = DYNAPCNN["weight_bits"], DYNAPCNN["state_bits"]
    for k, c in enumerate(chain):
        what = c.where if isinstance(c, Spiking) else c[0] if isinstance(c, tuple) else \
            type(c).__name__
        name = f"layer {k} ({what})"
        if isinstance(c, (nn.Conv2d, nn.Linear)):
            params = [c.weight] + ([c.bias] if c.bias is not None else [])
            if not all(_is_int(p.detach(), wb) for p in params):
                out.append(f"integer weights: {name} has weights or biases that are not "
                           f"{wb}-bit integers (pass quantize_weights={wb})")
            if isinstance(c, nn.Conv2d) and c.kernel_size[0] != c.kernel_size[1]:
                out.append(f"kernel: {name} has a non-square kernel {c.kernel_size}")
        elif isinstance(c, nn.Conv1d):
            out.append(f"layer kind: {name}: DYNAP-CNN runs 2-d convolutions")
        elif isinstance(c, Spiking):
            th = c.threshold
            if th.numel() > 1 and not bool((th == th.flatten()[0]).all()):
                out.append(f"threshold range: {name} has one threshold per "
                           "channel; DYNAP-CNN has one per layer (pass quantize_weights)")
            elif not _is_int(th, sb) or float(th.flatten()[0]) < 1:
                out.append(f"threshold range: {name} has threshold {float(th.flatten()[0]):g}; "
                           f"DYNAP-CNN needs an integer in [1, {2 ** (sb - 1) - 1}]")
            if not _is_int(c.v_init, sb):
                out.append(f"initial state: {name} starts at V0 values that are not {sb}-bit "
                           "integers (neurons_initial_value)")
            if c.strict:
                out.append(f"firing rule: {name} fires on v > threshold (ceil); the chip fires "
                           "on v >= threshold, the same only as V0 - 1 on integer currents "
                           "(quantize_weights does it)")
            if c.current == "expected":
                out.append(f"current: {name} integrates the mean of its T inputs "
                           "(current='expected'); the chip integrates each event as it comes")
        elif isinstance(c, tuple) and c[0] == "sumpool" and c[1] not in DYNAPCNN["pool_sizes"]:
            out.append(f"pooling kind: {name} sums {c[1]} x {c[1]}; DYNAP-CNN pools by "
                       f"{DYNAPCNN['pool_sizes']}")
        elif isinstance(c, nn.MaxPool2d):
            out.append(f"pooling kind: {name} max-pools its input; DYNAP-CNN pools by sums only")
        elif isinstance(c, ThetaScale):
            out.append(f"{name}: a spike train scaled by theta on its way out; the chip passes "
                       "binary events")
    last = next((c for c in reversed(chain) if not isinstance(c, (nn.Flatten, tuple))), None)
    if not isinstance(last, Spiking):
        out.append(f"readout: the network ends in {type(last).__name__}, not a spiking layer; "
                   "the chip's outputs are spikes")
    if not integer_input:
        out.append("input: analog values; the chip takes events (integer counts per step), "
                   "and an exact integer network needs integer input currents")
    return out


def _quantize(chain: list, bits: int, time_steps: int):
    """``(integer chain, its ANN)``: each core's threshold becomes 2^p (p as large as the weight
    range allows) and each output channel c of its synapse is scaled by 2^p / theta_c and
    rounded; ceil's strict rule becomes ``>=`` from V0 - 1 (the same on integer currents, so in
    instant mode only). The
    ANN's weights are the integer ones divided by the previous layer's 2^p (times k^2 around a
    sum pool, which is an average pool there): exact scalings that ``sj_qvm.convert`` undoes."""
    lim = 2 ** (bits - 1) - 1
    out, ann, theta_prev, k_pending, cur, since = [], [], 1.0, 1, None, False
    for c in chain:
        if isinstance(c, (nn.Conv2d, nn.Linear, nn.Conv1d)):
            synapse, twin = copy.deepcopy(c), copy.deepcopy(c)
            cur = [synapse, twin, k_pending * k_pending / theta_prev, 1.0]
            with torch.no_grad():
                twin.weight.mul_(cur[2])
            out.append(synapse)
            ann.append(twin)
            k_pending, since = 1, True
        elif isinstance(c, Spiking):
            synapse, twin, wf, bf = cur
            th = c.threshold.flatten().expand(synapse.weight.shape[0])
            need = synapse.weight.detach().abs().flatten(1).amax(1)
            if synapse.bias is not None:
                need = torch.maximum(need, synapse.bias.detach().abs())
            p = int(torch.floor(torch.log2(lim / (need / th).max().clamp_min(1e-30))))
            theta = float(2 ** max(1, min(p, DYNAPCNN["state_bits"] - 2)))
            scale = theta / th
            with torch.no_grad():
                synapse.weight.mul_(scale.view(-1, *[1] * (synapse.weight.ndim - 1))).round_()
                twin.weight.copy_(synapse.weight * wf)
                if synapse.bias is not None:
                    synapse.bias.mul_(scale).round_()
                    twin.bias.copy_(synapse.bias * bf)
            # V0 - 1 with ">=" is ceil's "> theta" only on integer currents; a T-mean is none
            shift = c.strict and c.current == "instant"
            v0 = {"floor": 0.0, "round": theta / 2, "ceil": theta - shift}.get(c.rounding)
            if v0 is None:
                raise ValueError(f"{c.where}: V0 is not matched to a rounding; no exact ANN twin")
            dt = c.threshold.dtype
            out.append(Spiking(torch.tensor(theta, dtype=dt), torch.tensor(v0, dtype=dt),
                               c.strict and not shift, c.current, c.rounding, c.where))
            ann.append(QuantReLU(time_steps, c.rounding, theta))
            theta_prev, since = theta, False
        elif isinstance(c, tuple) and c[0] == "sumpool":
            k = c[1]
            out.append(c)
            ann.append(nn.AvgPool2d(k))
            if since:  # the pool of an analog current: the synapse before it takes k^2
                cur[2], cur[3] = cur[2] * k * k, cur[3] * k * k
                with torch.no_grad():
                    cur[1].weight.mul_(k * k)
                    if cur[1].bias is not None:
                        cur[1].bias.mul_(k * k)
            else:
                k_pending *= k
        elif isinstance(c, ThetaScale):
            raise ValueError("theta could not be folded into a synapse (a ThetaScale edge); no "
                             "integer network")
        else:
            out.append(c)
            if not isinstance(c, TimeMean):
                ann.append(copy.deepcopy(c))
    return out, nn.Sequential(*ann).eval()


def check_dynapcnn(snn: QVMNetwork, input_shape: Tuple[int, ...], time_steps: Optional[int] = None,
                   quantize_weights: Optional[int] = None,
                   integer_input: bool = False) -> DynapcnnCheck:
    """Every DYNAP-CNN constraint ``snn`` breaks, one line each (module docstring).

    Args:
        snn: a converted :class:`~sj_qvm.convert.QVMNetwork`.
        input_shape: one sample's ``[C, H, W]``.
        time_steps: T (default ``snn.levels``).
        quantize_weights: bits (e.g. 8): make weights, thresholds and V0 integers (module
            docstring of :func:`_quantize`) and return the integer sinabs network and its ANN.
        integer_input: the input is event counts (integers), as from a DVS sensor.
    """
    T = check_levels(time_steps if time_steps is not None else snn.levels, "time_steps")
    p = next(snn.parameters(), None)
    chain = layer_chain(snn, T, tuple(input_shape), p.dtype if p is not None else torch.float32)
    if quantize_weights is None:
        return DynapcnnCheck(_problems(chain, input_shape, integer_input))
    bits = check_levels(quantize_weights, "quantize_weights")
    qchain, ann = _quantize(chain, bits, T)
    from .sinabs_net import require_sinabs, sinabs_layers
    try:
        require_sinabs()
    except ImportError:  # the ANN twin and the problem list need no sinabs
        net = None
    else:
        net = sinabs_layers(qchain, T)
    return DynapcnnCheck(_problems(qchain, input_shape, integer_input), net, ann)
