"""One-line migration from SpikingJelly's ``ann2snn``: :class:`Converter` (0.0.0.0.14 call style)
and :class:`QVMRecipe` (a 2.x ``FXConversionRecipe``).

    snn = ann2snn.Converter(mode='99.9%', dataloader=loader)(ann)              # SJ 0.0.0.0.14
    snn = sj_qvm.Converter(dataloader=loader, levels=8)(ann)                    # QVM

    snn = ann2snn.Converter(recipe=ann2snn.RateCodingRecipe(dataloader=loader, mode='99.9%')).convert(ann)
    snn = ann2snn.Converter(recipe=sj_qvm.QVMRecipe(dataloader=loader, levels=8)).convert(ann)

Both return a :class:`~sj_qvm.convert.QVMNetwork`: input ``[T, B, *]``, output ``[T, B, *]``.
"""
from __future__ import annotations

import copy
import warnings
from typing import Optional

import torch.fx as fx
import torch.nn as nn

from .. import _compat
from ..convert import QVMNetwork, convert
from ..checks import check_bool, check_current, check_int, check_levels, check_positive, check_rounding
from ..neuron import QVMIFNode
from ..quant import QuantReLU
from .calibration import calibrate, check_calibration_args
from .quantize import finetune, has_relu, quantize, quantize_graph

__all__ = ["Converter", "QVMRecipe", "neuron_factory"]


def _check_common(levels, rounding, method, channel_wise, percentile, bias_correction, current,
                  replace_maxpool, progress, reconstruct_steps):
    check_levels(levels)
    check_rounding(rounding)
    check_calibration_args(method, channel_wise, percentile, bias_correction,
                           reconstruct_steps=reconstruct_steps)
    check_current(current)
    check_bool(replace_maxpool, "replace_maxpool")
    check_bool(progress, "progress")


def _check_finetune(epochs, lr):
    check_int(epochs, "finetune_epochs", minimum=0)
    check_positive(lr, "finetune_lr")


def neuron_factory(rounding: str = "round", **node_kwargs):
    """A ``neuron_factory`` for SpikingJelly 2.x's ``RateCodingRecipe``: matched QVM nodes.

        recipe = ann2snn.RateCodingRecipe(dataloader=loader, mode="99.9%",
                                          neuron_factory=sj_qvm.neuron_factory("round"))

    SJ calls ``factory(scale)`` with the layer's calibrated scale (per layer) or 1.0 (channel-wise,
    where its scalers carry the per-channel scales); the node gets ``v_threshold=scale`` (so
    SJ's scalers become 1 and theta reads in ANN units, as after :func:`sj_qvm.to_qvm`) and V0
    matched to ``rounding``. ``node_kwargs`` go to :class:`~sj_qvm.QVMIFNode` (``current`` stays
    ``"instant"``: SJ's converted networks run step by step). Arguments are checked here, once.
    """
    check_rounding(rounding)
    if "v_threshold" in node_kwargs or "v_init" in node_kwargs:
        raise ValueError("neuron_factory sets v_threshold (SJ's scale) and v_init (from rounding) "
                         "itself; pass rounding= instead")
    QVMIFNode(v_threshold=1.0, v_init=rounding, **node_kwargs)  # fail now, not inside SJ

    def factory(scale) -> QVMIFNode:
        return QVMIFNode(v_threshold=float(scale), v_init=rounding, **node_kwargs)
    return factory


class Converter:
    """ANN -> QVM SNN in one call, in the style of SpikingJelly 0.0.0.0.14's ``Converter(...)(ann)``.

    Calling it on an ANN quantizes it (if it still has ReLUs, calibrating each threshold from
    ``dataloader`` with :func:`sj_qvm.quantize`'s ``method``, ``channel_wise``, ``percentile``,
    ``bias_correction`` and ``reconstruct_steps``), fine-tunes it for ``finetune_epochs``
    epochs (QAT, needs ``(input, target)`` batches), then converts it with
    :func:`sj_qvm.convert`. An ANN that already holds :class:`~sj_qvm.QuantReLU`\\ s (trained with QAT) keeps its learned thresholds.

    Args:
        levels: L; the SNN runs ``time_steps`` = L steps unless told otherwise.
        rounding: ``"floor"``, ``"round"`` or ``"ceil"``; V0 is matched to it.
        current: ``"expected"`` (exact at T = L) or ``"instant"`` (streaming).
    """

    def __init__(self, dataloader=None, levels: int = 8, rounding: str = "round",
                 percentile: float = 99.9, time_steps: Optional[int] = None,
                 current: str = "expected", finetune_epochs: int = 0, finetune_lr: float = 1e-4,
                 replace_maxpool: bool = False, progress: bool = True, method: str = "mse",
                 channel_wise: bool = True, bias_correction: Optional[bool] = None,
                 reconstruct_steps: Optional[int] = None):
        _check_common(levels, rounding, method, channel_wise, percentile, bias_correction, current,
                      replace_maxpool, progress, reconstruct_steps)
        _check_finetune(finetune_epochs, finetune_lr)
        if time_steps is not None:
            check_levels(time_steps, "time_steps")
        if finetune_epochs and dataloader is None:
            raise ValueError("finetune_epochs > 0 needs a dataloader of (input, target) batches")
        self.dataloader, self.levels, self.rounding = dataloader, levels, rounding
        self.percentile, self.time_steps, self.current = percentile, time_steps, current
        self.finetune_epochs, self.finetune_lr = finetune_epochs, finetune_lr
        self.replace_maxpool, self.progress = replace_maxpool, progress
        self.method, self.channel_wise, self.bias_correction = method, channel_wise, bias_correction
        self.reconstruct_steps = reconstruct_steps

    def __call__(self, ann: nn.Module) -> QVMNetwork:
        if has_relu(ann):
            qann = quantize(ann, self.levels, self.rounding, self.dataloader, self.method,
                            self.channel_wise, self.percentile, self.replace_maxpool,
                            self.bias_correction, progress=self.progress,
                            reconstruct_steps=self.reconstruct_steps)
        elif any(isinstance(m, QuantReLU) for m in ann.modules()):
            qann = copy.deepcopy(ann)
        else:
            raise ValueError(f"{type(ann).__name__} has neither ReLUs nor QuantReLUs to convert")
        if self.finetune_epochs:
            # Distilled from the float ANN where there is one (see finetune).
            finetune(qann, self.dataloader, self.finetune_epochs, self.finetune_lr,
                     progress=self.progress, teacher=ann if has_relu(ann) else None)
        #: The quantized (and fine-tuned) ANN the SNN was converted from; compare against it.
        self.qann = qann.eval()
        return convert(qann, self.time_steps, self.current)

    convert = __call__  # the 2.x spelling, ``Converter(...).convert(ann)``


if _compat.FXConversionRecipe is not None:
    class QVMRecipe(_compat.FXConversionRecipe):
        """QVM as a SpikingJelly 2.x recipe: ``ann2snn.Converter(recipe=QVMRecipe(...)).convert(ann)``.

        The template's steps do what :func:`sj_qvm.quantize` and :func:`sj_qvm.convert` do, with
        the same code, so the same ANN and calibration loader give the same thresholds:

        * ``before_trace`` keeps the ANN and hands SJ's tracer a stand-in: SJ's plain ``fx``
          tracer would trace into an existing ``QuantReLU`` (and fail on its threshold);
        * ``after_trace`` traces the ANN with QVM's tracer instead and replaces every ReLU call
          site (module or function) with a ``QuantReLU``;
        * ``calibrate``: :func:`sj_qvm.interop.calibration.calibrate` over ``dataloader``, layer
          by layer (skipped if the ANN already had QuantReLUs, whose trained thresholds are kept);
        * ``replace``: :func:`sj_qvm.convert`, giving a multi-step
          :class:`~sj_qvm.convert.QVMNetwork` (input ``[T, B, *]``).
        """

        def __init__(self, levels: int = 8, rounding: str = "round", dataloader=None,
                     percentile: float = 99.9, current: str = "expected",
                     replace_maxpool: bool = False, progress: bool = True, method: str = "mse",
                     channel_wise: bool = True, bias_correction: Optional[bool] = None,
                     reconstruct_steps: Optional[int] = None):
            _check_common(levels, rounding, method, channel_wise, percentile, bias_correction,
                          current, replace_maxpool, progress, reconstruct_steps)
            self.levels, self.rounding, self.dataloader = levels, rounding, dataloader
            self.percentile, self.current = percentile, current
            self.replace_maxpool, self.progress = replace_maxpool, progress
            self.method, self.channel_wise = method, channel_wise
            self.bias_correction = bias_correction
            self.reconstruct_steps = reconstruct_steps
            self._ann = None

        def before_trace(self, converter, ann: nn.Module) -> nn.Module:
            self._ann = ann.eval()
            return nn.Identity()

        def after_trace(self, converter, fx_model: fx.GraphModule) -> fx.GraphModule:
            self._calibrate = has_relu(self._ann)
            if self._calibrate:
                gm = quantize_graph(self._ann, self.levels, self.rounding, self.replace_maxpool)
            elif any(isinstance(m, QuantReLU) for m in self._ann.modules()):
                gm = copy.deepcopy(self._ann)
            else:
                raise ValueError(f"{type(self._ann).__name__} has neither ReLUs nor QuantReLUs")
            return gm.to(converter.device).eval()

        def insert_observers(self, converter, fx_model: nn.Module) -> nn.Module:
            return fx_model  # calibration hooks its own layers, pass by pass

        def calibrate(self, converter, fx_model: nn.Module) -> nn.Module:
            if self._calibrate and self.dataloader is None:
                warnings.warn("QVMRecipe without a dataloader leaves every threshold gamma at "
                              "1.0; pass calibration data", stacklevel=2)
            if self._calibrate and self.dataloader is not None:
                calibrate(fx_model, self.dataloader, self.method, self.channel_wise,
                          self.percentile, bias_correction=self.bias_correction,
                          progress=self.progress, reconstruct_steps=self.reconstruct_steps)
            return fx_model

        def replace(self, converter, fx_model: nn.Module) -> QVMNetwork:
            #: The quantized ANN the SNN was converted from.
            self.qann = fx_model
            return convert(fx_model, current=self.current).to(converter.device)

        def finalize(self, converter, snn: nn.Module) -> nn.Module:
            self._ann = None
            return snn
else:
    class QVMRecipe:
        """Placeholder on SpikingJelly 0.0.0.0.14, which has no conversion recipes."""

        def __init__(self, *args, **kwargs):
            raise RuntimeError(f"QVMRecipe needs SpikingJelly 2.x (FXConversionRecipe); this is "
                               f"spikingjelly {_compat.SJ_VERSION}. Use "
                               "sj_qvm.Converter(dataloader=..., levels=...)(ann) instead")
