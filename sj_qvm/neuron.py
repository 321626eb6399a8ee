"""QVMIFNode: a thin SpikingJelly neuron (a ``neuron.BaseNode``) over :mod:`sj_qvm.functional`
and :mod:`sj_qvm.ops`."""
from __future__ import annotations

import math
import warnings
from numbers import Real

import torch

from . import _compat
from .checks import (ROUNDINGS, check_bool, check_current, check_float_input,
                     check_positive_finite, check_step_mode, step_forward)
from .functional import if_step, matched_v0
from .ops import paths
from .ops.if_loop import dispatch
from .quant import channel_view


def _broadcastable(p: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """theta or V0 as given (scalar, per-channel ``[C]``, per-neuron) viewed to broadcast over one
    step's input ``x: [N, C, *]``; the one check both take. A 1-D tensor is per-channel: its size
    must be C (one element acts as a scalar), never matched against another dim by broadcasting."""
    if p.ndim == 0:
        return p
    if p.ndim == 1:
        if p.numel() == 1:
            return p.reshape(())
        if x.ndim < 2 or p.numel() != x.shape[1]:
            has = f"{x.shape[1]} (dim 1 of {tuple(x.shape)})" if x.ndim >= 2 else \
                f"no channel dim (shape {tuple(x.shape)})"
            raise ValueError(f"per-channel {name} has {p.numel()} channels, but each step's input "
                             f"[N, C, *] has {has}; a multi-step input is [T, N, C, *]")
        return channel_view(p, x.ndim)
    try:
        ok = torch.broadcast_shapes(p.shape, x.shape) == x.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"per-neuron {name} of shape {tuple(p.shape)} does not broadcast to each "
                         f"step's input shape {tuple(x.shape)} ([N, C, *]; give it as [C, *])")
    return p


def _check_soft_reset(v_reset) -> None:
    """SJ's ``v_reset``: ``None`` (soft reset, V_t = U_t - theta s_t) is the only one QVM takes."""
    if v_reset is None:
        return
    if isinstance(v_reset, bool) or not isinstance(v_reset, Real):
        raise TypeError(f"v_reset must be None (soft reset), got {type(v_reset).__name__} "
                        f"{v_reset!r}")
    raise ValueError(f"v_reset={v_reset!r} asks for a hard reset; QVM needs the soft reset "
                     "(v_reset=None): its spike count equals the ANN's level only when a spike "
                     "subtracts theta")


def _check_cupy_fp32_inference(flag, backend) -> None:
    """SJ 0.0.0.0.14's ``cupy_fp32_inference``: accepted, and True is ignored with a warning
    (``backend`` picks the fused CUDA kernels, and they run fp32 state for every input)."""
    check_bool(flag, "cupy_fp32_inference")
    if flag:
        warnings.warn("QVMIFNode ignores cupy_fp32_inference=True: backend='auto' (the default) "
                      "already runs the fused CUDA kernels on CUDA inputs when CuPy works, and "
                      f"backend='cupy' requires them (this node: backend={backend!r})",
                      UserWarning, stacklevel=3)


def _check_same_channels(theta, v0) -> None:
    """Per-channel theta and V0 must agree on the channel count (checked at construction)."""
    sizes = [t.numel() for t in (theta, v0)
             if isinstance(t, torch.Tensor) and t.ndim == 1 and t.numel() > 1]
    if len(sizes) == 2 and sizes[0] != sizes[1]:
        raise ValueError(f"per-channel v_threshold has {sizes[0]} channels but per-channel v_init "
                         f"has {sizes[1]}; both must have the input's channel count C")


class QVMIFNode(_compat.BaseNode):
    """Integrate-and-fire neuron with soft reset and a Quantization-Voltage-Matched V0.

    A host ``neuron.BaseNode`` (SJ 0.0.0.0.14 and 2.x), so SJ's tools that find neurons by class
    find it; SJ 2.x's functional transitions start from V0. ``BaseNode.__init__`` is not run (it
    asserts a float threshold): README, "A SpikingJelly neuron", says what that costs.

    A drop-in for ``neuron.IFNode(v_reset=None)``: it takes IFNode's keywords (``v_threshold``,
    ``v_reset``, ``surrogate_function``, ``detach_reset``, ``step_mode``, ``store_v_seq``, and SJ
    0.0.0.0.14's ``backend`` and ``cupy_fp32_inference``), and fires binary spikes {0, 1}::

        U_t = V_{t-1} + q_t;   s_t = 1[U_t >= theta];   V_t = U_t - theta * s_t

    Args:
        v_threshold: theta > 0, a float or a per-channel 1-D tensor ``[C]`` (channel = dim 1 of
            ``[N, C, *]``; its size must equal C, and a 1-element tensor acts as a scalar).
        v_init: V0, matched to the ANN's rounding so that, with T = L and the expected current,
            the spike count N equals the ANN level M at every z = T*q/theta, boundaries included:

            * ``"floor"``: V0 = 0, fire on ``U >= theta``  -> N = clip(floor(z), 0, T)
            * ``"round"``: V0 = theta/2, fire on ``U >= theta`` -> N = clip(floor(z + 1/2), 0, T)
              (half-up, *not* ``torch.round``'s half-to-even)
            * ``"ceil"``: V0 = theta, fire on ``U > theta`` (strict) -> N = clip(ceil(z), 0, T).
              With ``>=`` a V0 = theta neuron would give floor(z) + 1 at integer z.
            * a float, or a tensor (scalar, per-channel ``[C]`` or per-neuron ``[C, *]``): V0 itself,
              fire on ``U >= theta``. A tensor that requires grad is learned by BPTT. A
              per-channel V0 takes the same check as theta: its size must equal C (dim 1 of the
              input), else the forward raises; a per-neuron V0 must broadcast to the input.

            ``v_init`` is a public attribute: a new value takes effect at the next
            ``functional.reset_net`` (or ``reset()``), whatever the batch size.
        current: ``"instant"`` (step t receives its own input, streaming, as every SJ node) or
            ``"expected"`` (multi-step only: each step receives the mean of the T inputs, eq. 9).
        surrogate_function: SJ surrogate for the spike's gradient (default ``surrogate.Sigmoid()``);
            an instance (``surrogate.ATan()``) or another callable ``h -> spikes``, not a name.
        detach_reset: detach the reset term from the graph, as in SJ (a bool).
        step_mode: ``"s"`` (input ``[N, *]``) or ``"m"`` (input ``[T, N, *]``, output ``[T, N, *]``).
        store_v_seq: in multi-step mode keep ``self.v_seq: [T, N, *]`` (V_t after reset); a
            loss on it gets its gradient through BPTT, as on ``self.v`` and the spikes.
        backend: multi-step path (:mod:`sj_qvm.ops.paths`): ``"auto"`` (the compiled kernels
            for the input's device when they can run, the fused CUDA kernels for CUDA inputs,
            the C kernels for CPU ones; else torch, with one logged reason), ``"torch"`` (pure
            PyTorch), ``"cpu"`` or ``"cupy"`` (raise when their kernels cannot run).
            ``self.last_dispatch`` is ``(path, reason)`` of the last multi-step call, and
            :func:`sj_qvm.ops.diagnose` shows the rest. On the CUDA kernels the state is fp32
            for every input dtype, so ``self.v`` is fp32. SJ 0.14's ``backend="torch"`` and
            ``"cupy"`` mean the same here.
        v_reset: keyword only; ``None`` (soft reset). A number (SJ's hard reset, its default 0.0)
            raises ValueError: QVM's exactness needs the soft reset.
        cupy_fp32_inference: keyword only, SJ 0.0.0.0.14's flag; ``True`` is ignored with a
            warning (``backend`` chooses the kernels).

    Non-finite input currents (the policy shared with :class:`~sj_qvm.QuantReLU`, which maps a NaN
    pre-activation to level 0 and +inf / -inf to L / 0):

    * **NaN never fires.** ``U >= theta`` is false for ``U = NaN``, so a NaN current gives no
      spike; V becomes NaN and the neuron fires no more spikes until the next reset. In expected
      mode one NaN step makes the mean NaN: 0 spikes in all T steps. Nothing raises.
    * **+inf fires every step** (T spikes: V stays +inf after each reset) and **-inf never**
      (0 spikes), in both current modes, for every V0 and firing rule, on every backend.

    Single-step and multi-step modes give identical spikes. Without autograd (``torch.no_grad``
    or inputs that need no grad) multi-step mode runs an in-place loop that stores nothing; with
    autograd, a loop with a hand-written BPTT backward. Both are tested against
    :func:`sj_qvm.functional.if_multi_step_ref`.
    """

    def __init__(self, v_threshold=1.0, v_init=0.0, current: str = "instant",
                 surrogate_function=None, detach_reset: bool = False, step_mode: str = "s",
                 store_v_seq: bool = False, backend: str = "auto", *, v_reset=None,
                 cupy_fp32_inference: bool = False):
        # BaseNode.__init__ asserts a float v_threshold and sets v_reset; MemoryModule's is all
        # this node needs from the host (its memories and step mode).
        _compat.MemoryModule.__init__(self)
        check_current(current)
        check_step_mode(step_mode)
        if current == "expected" and step_mode == "s":
            raise ValueError("current='expected' needs step_mode='m' (the mean over T needs all T "
                             "inputs); use current='instant' for single-step mode")
        check_bool(detach_reset, "detach_reset")
        check_bool(store_v_seq, "store_v_seq")
        _check_soft_reset(v_reset)
        _check_cupy_fp32_inference(cupy_fp32_inference, backend)
        if surrogate_function is not None and (isinstance(surrogate_function, type)
                                               or not callable(surrogate_function)):
            what = ("the class " + surrogate_function.__name__ if isinstance(surrogate_function, type)
                    else f"{type(surrogate_function).__name__} {surrogate_function!r}")
            raise TypeError("surrogate_function must be a SpikingJelly surrogate instance (e.g. "
                            f"surrogate.Sigmoid(), surrogate.ATan()) or a callable, got {what}")
        self.current = current
        self.v_threshold = v_threshold
        self.v_init = v_init
        _check_same_channels(self._theta, self._v0)
        self.surrogate_function = (_compat.default_surrogate() if surrogate_function is None
                                   else surrogate_function)
        self.detach_reset = detach_reset
        self.step_mode = step_mode
        self.backend = backend
        self.last_dispatch = None
        # A float sentinel: the next forward materializes V0 at the input's shape.
        self.register_memory("v", 0.0)
        self.store_v_seq = store_v_seq  # after v: SJ reads the state tuple as (v, v_seq)

    # -- parameters -------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if name == "v_threshold":
            self._set_tensor_or_float("_theta", value, "v_threshold", positive=True)
        elif name == "v_init":
            if isinstance(value, str):
                if value not in ROUNDINGS:  # the message also names the non-string forms
                    raise ValueError(f"v_init must be one of {ROUNDINGS}, a float or a tensor, "
                                     f"got {value!r}")
                self._clear("_v0")
                object.__setattr__(self, "_v0", None)
                object.__setattr__(self, "_v_init_mode", value)
            else:
                self._set_tensor_or_float("_v0", value, "v_init")
                object.__setattr__(self, "_v_init_mode", None)
        else:
            super().__setattr__(name, value)

    def _clear(self, slot: str):
        for d in (self._parameters, self._buffers):
            d.pop(slot, None)
        self.__dict__.pop(slot, None)

    def _set_tensor_or_float(self, slot: str, value, name: str, positive: bool = False):
        """Check ``value`` fully, then replace the slot: a rejected value keeps the old one."""
        allowed = "a float > 0 or a 1-D per-channel tensor" if positive else \
            f"one of {ROUNDINGS}, a float or a tensor"
        if value is None or isinstance(value, bool) or not isinstance(value, (Real, torch.Tensor)):
            raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {value!r}")
        if isinstance(value, torch.Tensor):
            if positive:
                check_positive_finite(value, name)
            elif not torch.isfinite(value.detach()).all():
                raise ValueError(f"{name} must be finite")
            self._clear(slot)
            if isinstance(value, torch.nn.Parameter):
                self.register_parameter(slot, value)
            else:
                self.register_buffer(slot, value.detach().clone())
        else:
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
            if positive and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
            self._clear(slot)
            object.__setattr__(self, slot, float(value))

    @property
    def store_v_seq(self) -> bool:
        """Keep ``self.v_seq: [T, N, *]`` in multi-step mode (a memory, reset to None); overrides
        the host BaseNode's property, which differs between 0.0.0.0.14 and 2.x."""
        return self._store_v_seq

    @store_v_seq.setter
    def store_v_seq(self, value: bool):
        check_bool(value, "store_v_seq")
        object.__setattr__(self, "_store_v_seq", value)
        if value and "v_seq" not in self._memories:
            self.__dict__.pop("v_seq", None)
            self.register_memory("v_seq", None)

    @property
    def supported_backends(self):
        return paths.BACKENDS

    @property
    def backend(self) -> str:
        """``"auto"``, ``"torch"``, ``"cpu"`` or ``"cupy"`` (overrides SJ 0.0.0.0.14's
        ``MemoryModule.backend``, so its ``functional.set_backend`` works too)."""
        return self._backend

    @backend.setter
    def backend(self, value: str):
        paths.check_backend(value)
        object.__setattr__(self, "_backend", value)

    @property
    def v_reset(self):
        """``None``: the soft reset, as ``neuron.IFNode(v_reset=None)`` (for SJ code that reads it)."""
        return None

    @property
    def v_threshold(self):
        """theta: a float or a per-channel tensor."""
        return self._theta

    @property
    def v_init(self):
        """V0 as given: ``"floor"``, ``"round"``, ``"ceil"``, a float or a tensor."""
        return self._v_init_mode if self._v_init_mode is not None else self._v0

    @property
    def strict(self) -> bool:
        """Fire on ``U > theta`` (only for ``v_init="ceil"``) instead of ``U >= theta``."""
        mode = self._v_init_mode
        return mode is not None and matched_v0(mode, 1.0)[1]

    def _theta_for(self, x: torch.Tensor, dtype=None):
        """theta broadcastable over a single-step input ``x: [N, C, *]`` (in ``dtype``, default
        ``x``'s)."""
        th = self._theta
        if isinstance(th, float):
            return th
        return _broadcastable(th.to(dtype=dtype or x.dtype, device=x.device), x, "v_threshold")

    def _v0_for(self, x: torch.Tensor, dtype=None):
        """V0 as a float or a tensor broadcastable to ``x: [N, *]`` (in ``dtype``, default ``x``'s)."""
        mode = self._v_init_mode
        if mode is not None:
            return matched_v0(mode, self._theta_for(x, dtype))[0]
        v0 = self._v0
        if isinstance(v0, torch.Tensor):
            v0 = _broadcastable(v0.to(dtype=dtype or x.dtype, device=x.device), x, "v_init")
        return v0

    def kernel_inputs(self, x: torch.Tensor, v=None, dtype=None) -> tuple:
        """``(V0 or the state, theta)`` as every multi-step path reads them, for a step input
        ``x: [N, *]``: theta as a float or a view that broadcasts over ``x``; V0 likewise in its
        compact form (float, per-channel view) while ``v`` (default ``self.v``) is the reset's
        float sentinel, else the carried state ``[N, *]`` (as it is). Both in ``dtype`` (default
        ``x``'s; the CUDA kernels read fp32)."""
        v = self.v if v is None else v
        v = self._fresh_v(x, v) if isinstance(v, torch.Tensor) else self._v0_for(x, dtype)
        return v, self._theta_for(x, dtype)

    def initial_v(self, x: torch.Tensor) -> torch.Tensor:
        """V0 as a tensor of ``x``'s shape ``[N, *]`` and dtype."""
        return torch.zeros_like(x) + self._v0_for(x)

    # -- forward ----------------------------------------------------------------------------
    def _fresh_v(self, x: torch.Tensor, v=None) -> torch.Tensor:
        """The state ``v`` (default ``self.v``) at ``x``'s shape ``[N, *]``: V0 for the float
        sentinel a reset leaves."""
        v = self.v if v is None else v
        if not isinstance(v, torch.Tensor) or v.shape != x.shape:
            if isinstance(v, torch.Tensor):
                raise ValueError(f"input shape {tuple(x.shape)} differs from the state's "
                                 f"{tuple(v.shape)}; call functional.reset_net(net) between "
                                 "sequences")
            v = self.initial_v(x)
        return v

    def needs_grad(self, x: torch.Tensor, v=None) -> bool:
        """Whether a forward on ``x`` from state ``v`` (default ``self.v``) needs autograd."""
        v = self.v if v is None else v
        return torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters(recurse=False))
            or (isinstance(v, torch.Tensor) and v.requires_grad))

    def _single_step(self, x: torch.Tensor, v):
        """One step from state ``v``: ``x: [N, *]`` -> ``(spike [N, *], V_t [N, *])``."""
        if self.current == "expected":
            raise ValueError("current='expected' needs step_mode='m'; this node is in "
                             "step_mode='s'")
        if not isinstance(x, torch.Tensor) or x.ndim < 1:
            got = f"a {x.ndim}-d tensor" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"single-step input must be a tensor [N, *], got {got}")
        check_float_input(x)
        v = self._fresh_v(x, v)
        surrogate = self.surrogate_function if self.needs_grad(x, v) else None
        return if_step(x, v, self._theta_for(x), self.strict, surrogate, self.detach_reset)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        spike, self.v = self._single_step(x, self.v)
        return spike

    def _multi_step(self, x_seq: torch.Tensor, v):
        """T steps from state ``v`` on the path :mod:`~sj_qvm.ops.if_loop.dispatch` selects:
        ``x_seq: [T, N, *]`` -> ``(spike_seq [T, N, *], V_T [N, *], v_seq [T, N, *] or None)``."""
        if not isinstance(x_seq, torch.Tensor) or x_seq.ndim < 2 or x_seq.shape[0] == 0:
            got = (f"shape {tuple(x_seq.shape)}" if isinstance(x_seq, torch.Tensor)
                   else type(x_seq).__name__)
            raise ValueError("multi-step input must be x_seq: [T, N, *] (time-steps first, T >= 1, "
                             f"at least 2 dims), got {got}")
        check_float_input(x_seq)
        needs_grad = self.needs_grad(x_seq, v)
        x0 = x_seq[0]
        v0, th = self.kernel_inputs(x0, v)
        path, reason = dispatch.select(
            self.backend, x_seq, v0, th, strict=self.strict, current=self.current,
            surrogate_function=self.surrogate_function, detach_reset=self.detach_reset,
            needs_grad=needs_grad, rounding=self._v_init_mode)
        self.last_dispatch = (path, reason)
        if path == "cupy" and x_seq.dtype != torch.float32:  # the kernels read fp32
            v0, th = self.kernel_inputs(x0, v, torch.float32)
        return dispatch.run(path, x_seq, v0, th, self.strict, self.current,
                            self.surrogate_function if needs_grad else None, self.detach_reset,
                            self.store_v_seq, needs_grad)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        spike_seq, self.v, v_seq = self._multi_step(x_seq, self.v)
        if self.store_v_seq:
            self.v_seq = v_seq
        return spike_seq

    # SJ 2.x's explicit-state transitions; ``states`` is ``(v,)`` or ``(v, v_seq)``, the order of
    # this node's memories, and is never written to.
    def materialize_states(self, inputs, states, step_mode: str):
        """``states`` with v at the input's shape: the reset sentinel becomes V0 (not 0)."""
        x = inputs[0][0] if step_mode == "m" else inputs[0]
        return (self._fresh_v(x, states[0]), *states[1:])

    def single_step_functional_forward(self, inputs, states, **kwargs):
        spike, v = self._single_step(inputs[0], states[0])
        return (spike,), (v, *states[1:])

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        spike_seq, v, v_seq = self._multi_step(inputs[0], states[0])
        return (spike_seq,), (v, *((v_seq,) if len(states) > 1 else ()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return step_forward(self, x)

    def extra_repr(self) -> str:
        th = self._theta
        th = f"{th:.4g}" if isinstance(th, float) else f"tensor{tuple(th.shape)}"
        v0 = self.v_init
        v0 = repr(v0) if not isinstance(v0, torch.Tensor) else f"tensor{tuple(v0.shape)}"
        return (f"v_threshold={th}, v_init={v0}, current={self.current!r}, "
                f"detach_reset={self.detach_reset}, step_mode={self.step_mode!r}")
