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
from typing import Optional

import torch.fx as fx
import torch.nn as nn

from .. import _compat
from ..convert import QVMNetwork, convert
from ..functional import CURRENTS
from ..quant import QuantReLU, check_levels, check_rounding
from .quantize import (finetune, has_relu, observe, quantize, quantize_graph, run_calibration,
                       set_thresholds)

__all__ = ["Converter", "QVMRecipe"]


def _check_common(levels, rounding, percentile, current):
    check_levels(levels)
    check_rounding(rounding)
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if current not in CURRENTS:
        raise ValueError(f"current must be one of {CURRENTS}, got {current!r}")


class Converter:
    """ANN -> QVM SNN in one call, in the style of SpikingJelly 0.0.0.0.14's ``Converter(...)(ann)``.

    Calling it on an ANN quantizes it (if it still has ReLUs, calibrating each threshold from
    ``dataloader`` at ``percentile``), fine-tunes it for ``finetune_epochs`` epochs (QAT, needs
    ``(input, target)`` batches), then converts it with :func:`sj_qvm.convert`. An ANN that already
    holds :class:`~sj_qvm.QuantReLU`\\ s (trained with QAT) keeps its learned thresholds.

    Args:
        levels: L; the SNN runs ``time_steps`` = L steps unless told otherwise.
        rounding: ``"floor"``, ``"round"`` or ``"ceil"``; V0 is matched to it.
        current: ``"expected"`` (exact at T = L) or ``"instant"`` (streaming).
    """

    def __init__(self, dataloader=None, levels: int = 8, rounding: str = "round",
                 percentile: float = 99.9, time_steps: Optional[int] = None,
                 current: str = "expected", finetune_epochs: int = 0, finetune_lr: float = 1e-3,
                 replace_maxpool: bool = False, progress: bool = True):
        _check_common(levels, rounding, percentile, current)
        if finetune_epochs and dataloader is None:
            raise ValueError("finetune_epochs > 0 needs a dataloader of (input, target) batches")
        self.dataloader, self.levels, self.rounding = dataloader, levels, rounding
        self.percentile, self.time_steps, self.current = percentile, time_steps, current
        self.finetune_epochs, self.finetune_lr = finetune_epochs, finetune_lr
        self.replace_maxpool, self.progress = replace_maxpool, progress

    def __call__(self, ann: nn.Module) -> QVMNetwork:
        if has_relu(ann):
            qann = quantize(ann, self.levels, self.rounding, self.dataloader, self.percentile,
                            self.replace_maxpool, progress=self.progress)
        elif any(isinstance(m, QuantReLU) for m in ann.modules()):
            qann = copy.deepcopy(ann)
        else:
            raise ValueError(f"{type(ann).__name__} has neither ReLUs nor QuantReLUs to convert")
        if self.finetune_epochs:
            finetune(qann, self.dataloader, self.finetune_epochs, self.finetune_lr,
                     progress=self.progress)
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
        * ``insert_observers`` / ``calibrate``: percentile observers and a pass over ``dataloader``
          (skipped if the ANN already had QuantReLUs, whose trained thresholds are kept);
        * ``replace``: :func:`sj_qvm.convert`, giving a multi-step
          :class:`~sj_qvm.convert.QVMNetwork` (input ``[T, B, *]``).
        """

        def __init__(self, levels: int = 8, rounding: str = "round", dataloader=None,
                     percentile: float = 99.9, current: str = "expected",
                     replace_maxpool: bool = False, progress: bool = True):
            _check_common(levels, rounding, percentile, current)
            self.levels, self.rounding, self.dataloader = levels, rounding, dataloader
            self.percentile, self.current = percentile, current
            self.replace_maxpool, self.progress = replace_maxpool, progress
            self._ann = self._observers = None

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
            if self._calibrate and self.dataloader is not None:
                self._observers = observe(fx_model)
            return fx_model

        def calibrate(self, converter, fx_model: nn.Module) -> nn.Module:
            if self._observers is not None:
                observers, hooks, state = self._observers
                try:
                    run_calibration(fx_model, self.dataloader, state, self.progress)
                finally:
                    for h in hooks:
                        h.remove()
                set_thresholds(fx_model, observers, self.percentile)
            self._observers = None
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
