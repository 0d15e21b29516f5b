"""Which engine runs a diffusers checkpoint: the one place GENFORGE_IMAGE_BACKEND is decided.

- `torch`: diffusers on torch (`engines/diffusers.py`), float16 on CUDA, float32 on the CPU.
- `openvino`: the same pipeline with its UNet and VAE decoder converted to OpenVINO (`engines/openvino_diffusers.py`);
  a checkpoint it cannot convert fails with `model_unconvertible`.
- `auto` (the default): torch where diffusers would run on CUDA, else OpenVINO, which then falls back to torch for
  a checkpoint it cannot convert and says so in the record's warnings.

Decided without importing torch (the server process never loads it): CUDA is expected when
GENFORGE_IMAGE_DEVICE=cuda, or with `auto` when an NVIDIA driver is loaded and the installed torch is not a
`+cpu` build.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

TORCH, OPENVINO = "diffusers", "openvino-diffusers"  # the engine kinds (genforge.engines.ENGINE_MODULES)


def _cuda_expected(settings) -> bool:
    if settings.image_device in ("cpu", "cuda"):
        return settings.image_device == "cuda"
    if not Path("/proc/driver/nvidia/version").exists():
        return False
    try:
        return "+cpu" not in metadata.version("torch")
    except metadata.PackageNotFoundError:
        return False


def diffusers_engine(settings) -> str:
    """The engine kind that runs diffusers checkpoints under these settings."""
    backend = settings.image_backend
    if backend == "auto":
        backend = "torch" if _cuda_expected(settings) else "openvino"
    return OPENVINO if backend == "openvino" else TORCH


def engine_for(kind: str, settings) -> str:
    """The engine that runs a model registered with engine `kind` (only diffusers models have a choice)."""
    return diffusers_engine(settings) if kind == TORCH else kind
