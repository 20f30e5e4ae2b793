"""Quantisation-aware fine-tuning for the full dynamic INT8 judge (``--cpu-model int8``).

ONNX Runtime's dynamic INT8 (``export.to_onnx.quantise_int8``) rounds every Linear's input
to uint8 with one scale per call, taken from that call's min and max, and its weights to
7-bit signed integers, one scale per output channel. A judge trained in float32 loses a few
verdicts to that rounding (BERT's wide feed-forward activations). Here the same rounding is
simulated in the forward pass (straight-through gradients), so the fine-tune learns weights
that survive it. The checkpoint stays a stock float32 ``BertForTokenClassification``: nothing
is added to its state, only the Linear layers' forward is changed while training.

Measured in stop 18 (``training/RUNS.md``): 250 such steps from the bundled judge did not beat
exporting that judge to INT8 as it is, so the bundle was not trained this way; the tool stays
for a judge that INT8 hurts more.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

# ONNX Runtime's dynamic quantiser with reduce_range=True: weights in [-64, 64]
# (7 bits, no int16 overflow on AVX2 without VNNI); activations uint8 [0, 255].
WEIGHT_QMAX = 64.0
ACT_QMAX = 255.0


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q`` forward, identity backward."""
    return x + (q - x).detach()


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel rounding (a torch Linear's rows are its outputs)."""
    scale = w.detach().abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / WEIGHT_QMAX
    return _ste(w, torch.round(w / scale).clamp(-WEIGHT_QMAX, WEIGHT_QMAX) * scale)


def fake_quant_activation(x: torch.Tensor) -> torch.Tensor:
    """Asymmetric uint8 rounding with one scale per example, as one request per call gets:
    the range always holds zero (ONNX ``DynamicQuantizeLinear``)."""
    flat = x.detach().flatten(1)
    lo = flat.amin(dim=1).clamp_max(0.0)
    hi = flat.amax(dim=1).clamp_min(0.0)
    shape = (-1,) + (1,) * (x.dim() - 1)
    scale = ((hi - lo) / ACT_QMAX).clamp_min(1e-8).view(shape)
    zero = torch.round(-lo.view(shape) / scale).clamp(0.0, ACT_QMAX)
    q = (torch.round(x / scale) + zero).clamp(0.0, ACT_QMAX)
    return _ste(x, (q - zero) * scale)


def _quantised_forward(layer: nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.linear(fake_quant_activation(x), fake_quant_weight(layer.weight), layer.bias)
    return forward


def enable(model: nn.Module) -> int:
    """Simulate dynamic INT8 in every Linear (the MatMuls with a weight the exporter
    quantises; the attention products stay float32 there too). Returns their count."""
    n = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.forward = _quantised_forward(module)  # type: ignore[method-assign]
            n += 1
    return n


def disable(model: nn.Module) -> None:
    """Back to the float32 forward (before saving or validating the float32 model)."""
    for module in model.modules():
        if isinstance(module, nn.Linear) and "forward" in vars(module):
            del module.forward
