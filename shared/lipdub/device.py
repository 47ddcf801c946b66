"""Pick the torch device for the models (`--device auto|cpu|cuda`)."""

from __future__ import annotations

from lipdub.config import Device
from lipdub.errors import ErrorCode, InputError


def resolve_device(device: Device) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(ErrorCode.internal, "device cuda was asked for (--device, LIPDUB_DEVICE) but no CUDA device "
                                             "is available")
    return device
