"""Engines by kind. Each module named here has `create(settings)` returning an engine (see base.py)."""

from __future__ import annotations

import importlib

ENGINE_MODULES: dict[str, str] = {
    "llama.cpp": "genforge.engines.llama",
    "portrait": "genforge.engines.portrait",
    "diffusers": "genforge.engines.diffusers",
    "openvino-diffusers": "genforge.engines.openvino_diffusers",
    "piper": "genforge.engines.piper",
    "espeak-ng": "genforge.engines.espeak",
    "remote": "genforge.engines.remote",
    "video": "genforge.engines.video",
    "faster-whisper": "genforge.engines.whisper",
}


def create_engine(kind: str, settings):
    from genforge.errors import ModelUnavailable

    module = ENGINE_MODULES.get(kind)
    if module is None:
        raise ModelUnavailable(f"genforge has no engine {kind!r}")
    return importlib.import_module(module).create(settings)
