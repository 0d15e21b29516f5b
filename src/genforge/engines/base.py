"""What every engine receives and returns. Engines know nothing of HTTP or the database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from genforge.catalog import ResolvedModel

# Progress and token events: {"type": "token", "text": ...} or {"type": "progress", "step": i, "total": n}.
Emit = Callable[[dict], None]


@dataclass
class GenerationJob:
    content_id: str
    content_type: str
    model: ResolvedModel
    prompt: str
    system: str | None
    params: dict  # max_tokens, temperature, top_p, seed, stop (text); the seed is always set


@dataclass
class EngineOutput:
    data: bytes  # the artifact's bytes, exactly as they will be stored
    media_type: str
    engine_version: str
    load_ms: float
    generate_ms: float
    text: str | None = None
    finish_reason: str | None = None
    usage: dict | None = None
    extra: dict = field(default_factory=dict)


class Engine(Protocol):
    kind: str
    content_types: tuple[str, ...]

    def load(self, model: ResolvedModel) -> float:
        """Load (or keep) the model; returns milliseconds spent loading, 0 when already warm."""

    def generate(self, job: GenerationJob, emit: Emit, cancelled: Callable[[], bool]) -> EngineOutput:
        """Run the model. Raises typed errors from genforge.errors, never returns empty output as success."""
