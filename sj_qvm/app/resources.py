"""The one memory estimate of each job, made from its flags before any work starts.

A job's network is built on PyTorch's ``meta`` device (shapes only, no memory) and run once on a
``[1, C, S, S]`` input to learn its parameter count and each layer's activation size per sample.
From these, :func:`check_fits` takes the model and the largest of the job's steps:

* the model: weights, gradients and optimizer state (SGD's momentum, Adam's two moments), float32;
* a training batch: its input and every layer's output, which autograd keeps for the backward
  pass (bfloat16 under AMP on a GPU, else float32);
* the SNN at the largest T evaluated: its ``[T, B, *]`` input and the largest layer's input and
  output, ``T * B * (input + 2 * largest activation)`` values (float32; 8 bytes for the
  conversion report's float64 pass at T = L on its samples). The static pipeline runs its SNN
  in chunks of :func:`snn_chunk` samples, so there B is at most one chunk.

It counts what must be held at once, not the allocator's overheads. A job whose estimate exceeds
the memory of the device it runs on (the GPU's, or the machine's RAM lowered to its cgroup limit)
is refused in one line naming the flag that drives the largest step, the estimate and the bound,
as ``events_to_frames`` does with ``MAX_FRAMES_BYTES``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn

from ..quant import QuantReLU

__all__ = ["SNN_CHUNK_BYTES", "Need", "activation_sizes", "network_sizes", "snn_chunk",
           "memory_bound", "check_fits", "dvs_needs", "static_needs", "digits_needs"]

_F32, _F64 = 4, 8
_STATES = {"sgd": 1, "adam": 2}  # optimizer tensors per parameter
_GIB = float(1 << 30)
SNN_CHUNK_BYTES = 2 << 30
"""What the static pipeline's SNN evaluation holds at once (2 GiB): a batch is run in chunks of
:func:`snn_chunk` samples, so a large T or image costs time, not memory."""


@dataclass(frozen=True)
class Need:
    """One step of a job: the flag that drives it (as the refusal names it), what it is, and its
    bytes (besides the model's)."""
    flag: str
    what: str
    nbytes: int


def activation_sizes(model: nn.Module, x: torch.Tensor) -> list:
    """Every leaf module's output elements per sample, in call order, from one forward pass of
    ``model`` (eval mode, no gradient) on ``x [1, *]``."""
    sizes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out[0].numel()))
             for m in model.modules() if not any(True for _ in m.children())]
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(training)
    return sizes


def network_sizes(build: Callable[[], nn.Module], input_shape: Sequence[int]) -> tuple:
    """``(parameters, activations)`` of the network ``build()`` returns, built on the meta device:
    its parameter count, and :func:`activation_sizes` for one sample of ``input_shape = (C, H, W)``
    (QuantReLU layers included)."""
    with torch.device("meta"):
        model = build()
        params = sum(p.numel() for p in model.parameters())
        for name, m in list(model.named_modules()):
            if isinstance(m, QuantReLU):  # shape-preserving; its kernels need real values
                model.set_submodule(name, nn.Identity())
        sizes = activation_sizes(model, torch.empty(1, *input_shape))
    return params, sizes


def snn_chunk(T: int, in_elems: int, acts) -> int:
    """How many samples the SNN runs at once at ``T`` steps so that its ``[T, chunk, *]``
    tensors stay within :data:`SNN_CHUNK_BYTES` (at least 1)."""
    return max(1, SNN_CHUNK_BYTES // _snn(T, 1, in_elems, acts))


def memory_bound(device: torch.device) -> tuple:
    """``(bytes, description)``: the memory of ``device`` (a GPU's total, or this machine's RAM,
    lowered to its cgroup limit where one is set)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory, "GPU's memory"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total, "machine's memory"


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
        else torch.device("cpu")


def check_fits(model: Need, needs: Sequence[Need], device=None) -> int:
    """Raise ValueError (one line: the flag, the estimate, the bound) when the ``model`` and the
    largest of the ``needs`` exceed ``device``'s memory; returns the estimate in bytes. The flag
    named is the larger part's."""
    largest = max(needs, key=lambda n: n.nbytes)
    total = model.nbytes + largest.nbytes
    bound, where = memory_bound(_device() if device is None else torch.device(device))
    if total > bound:
        cause = model if model.nbytes >= largest.nbytes else largest
        raise ValueError(
            f"{cause.flag}: {cause.what} and the rest of the run need about {total / _GIB:.1f} GiB "
            f"of memory (estimated from the flags, before any work), more than this {where} "
            f"({bound / _GIB:.1f} GiB); lower one of them")
    return total


def _snn(T: int, batch: int, in_elems: int, acts, itemsize: int = _F32) -> int:
    return T * batch * (in_elems + 2 * max(acts)) * itemsize


def _model(flag: str, params: int, optimizer: str) -> Need:
    return Need(flag, f"the model's {params:,} parameters (weights, gradients, {optimizer} state)",
                params * _F32 * (2 + _STATES[optimizer]))


def _train_itemsize(args) -> int:
    return 2 if torch.cuda.is_available() and not args.no_amp else _F32  # fit's bfloat16 AMP


def _sweep(T_flag: str, Ts, batch: int, in_elems: int, acts, size_flags: str) -> Need:
    """The SNN over ``Ts`` (the last one is the T always evaluated, named by ``T_flag``)."""
    T = max(Ts)
    flag = T_flag if T == Ts[-1] else f"--eval-time-steps {T}"
    return Need(f"{flag}, {size_flags}", f"the SNN at T = {T} on batches of {batch}",
                _snn(T, batch, in_elems, acts))


def dvs_needs(args, spec) -> tuple:
    """``(model, needs)`` of the DVS pipeline for its parsed ``args`` on ``spec``."""
    from ..models import build_model
    from ..datasets.representations import representation
    channels = representation(args.input).channels(args.frames)
    shape = (channels, args.size, args.size)
    params, acts = network_sizes(lambda: build_model(
        args.arch, in_channels=channels, num_classes=spec.num_classes, levels=args.levels,
        rounding=args.rounding, width=args.width, channel_wise=not args.layer_thresholds), shape)
    pixels, T, B = 2 * args.size ** 2, args.frames, args.batch_size
    Ts = sorted(set(args.eval_time_steps)) + [T]  # T = --frames is always evaluated
    sizes = f"--batch-size {B}, --size {args.size} and --width {args.width}"
    return _model(f"--width {args.width}", params, args.optimizer), [
        Need(f"--frames {T}, {sizes}", f"a training batch of {B} samples of {T} frames",
             B * (T * pixels * _F32 + sum(acts) * _train_itemsize(args))),
        _sweep(f"--frames {T}", Ts, B, pixels, acts, sizes),
        Need(f"--frames {T}, --size {args.size} and --width {args.width}",
             f"the float64 conversion report at T = {T} on 64 samples",
             _snn(T, 64, pixels, acts, _F64)),
    ]


def static_needs(args, spec) -> tuple:
    """``(model, needs)`` of the static-image pipeline for its parsed ``args``."""
    from .static.models import TV_ARCHS, _torchvision, build_network
    S, L = args.image_size, args.levels
    if args.arch in TV_ARCHS:  # its plain-ReLU form: quantize() keeps every shape
        params, acts = network_sizes(lambda: _torchvision(args.arch, spec.num_classes), (3, S, S))
        net = f"--arch {args.arch}"
    else:
        params, acts = network_sizes(lambda: build_network(args, spec.num_classes, spec.variant),
                                     (3, S, S))
        net = f"--width {args.width}"
    pixels = 3 * S * S
    batch = min(args.batch_size, args.test_samples or args.batch_size)
    report = min(32, args.test_samples or 32)
    Ts = sorted(set(args.eval_time_steps)) + [L]  # T = L is always evaluated
    return _model(net, params, args.optimizer), [
        Need(f"--image-size {S}, --batch-size {args.batch_size} and {net}",
             f"a training batch of {args.batch_size} images of {S}x{S}",
             args.batch_size * (pixels * _F32 + sum(acts) * _train_itemsize(args))),
        _sweep(f"--levels {L} (T = L is always evaluated)", Ts,
               min(batch, snn_chunk(max(Ts), pixels, acts)), pixels, acts,
               f"--batch-size {args.batch_size}, --image-size {S} and {net}"),
        Need(f"--levels {L}, --image-size {S} and {net}",
             f"the float64 conversion report at T = L = {L} on {report} images",
             _snn(L, report, pixels, acts, _F64)),
    ]


def digits_needs(levels: int, rounding: str, test_samples: int = 359) -> tuple:
    """``(model, needs)`` of the digits job: its SNN at T = L on every test image."""
    from .digits import digits_cnn
    params, acts = network_sizes(lambda: digits_cnn(levels, rounding), (1, 8, 8))
    return _model(f"--levels {levels}", params, "adam"), [
        Need(f"--levels {levels}", f"the SNN at T = L = {levels} on {test_samples} test images",
             _snn(max(levels, 16), test_samples, 64, acts)),
    ]
