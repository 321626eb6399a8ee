"""Where NaN or inf met during calibration come from: the batch's input, the weights, or (both
finite) an overflow on the way; one error that names the place, the batch and the cause."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

__all__ = ["nonfinite_error"]


def _count(t: torch.Tensor) -> str:
    nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    return f"{nan} NaN and {inf} inf of {t.numel()} values"


def nonfinite_error(model: nn.Module, where: str, batch: int, x: torch.Tensor,
                    net_input: Optional[torch.Tensor]) -> ValueError:
    """The error for NaN/inf in ``x`` (any shape), recorded at ``where`` (e.g. "QuantReLU 'r'")
    in batch ``batch``; ``net_input`` is that batch's model input, None where not at hand."""
    causes = []
    if net_input is not None and not bool(torch.isfinite(net_input).all()):
        causes.append(f"the input holds NaN/inf ({_count(net_input)} of batch {batch})")
    weights = [f"'{n}' ({_count(t)})" for n, t in (*model.named_parameters(),
                                                    *model.named_buffers())
               if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if weights:
        more = f" and {len(weights) - 4} more" if len(weights) > 4 else ""
        causes.append(f"the weights hold NaN/inf: {', '.join(weights[:4])}{more}")
    if not causes:
        finite = "the weights and the input are" if net_input is not None else "the weights are"
        causes.append(f"{finite} finite: the values overflowed on the way (check the input's "
                      "scale)")
    return ValueError(f"{where} got NaN/inf during calibration at batch {batch} ({_count(x)}): "
                      + "; ".join(causes))
