"""Per content type: turn a request into (model name, complete parameters) before any record exists.

Everything refused here is a 4xx without a record. The seed is always set: drawn when not given,
so that every record says which seed made it.
"""

from __future__ import annotations

import importlib.util
import secrets
from collections.abc import Callable

from pydantic import BaseModel, ValidationError

from genforge.catalog import HUB_MODELS, PACKAGED, QUALITY, ModelCatalog
from genforge.config import Settings
from genforge.errors import InvalidRequest, ModelNotFound, ModelUnavailable
from genforge.images import diffusers_native_size
from genforge.schemas import GenerateRequest, ImageParams, SpeechParams, TextParams

Planner = Callable[[GenerateRequest, Settings, ModelCatalog], tuple[str | None, dict]]


def pydantic_error(exc: ValidationError, prefix: str = "") -> InvalidRequest:
    """The first pydantic error as an InvalidRequest naming its field."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
    return InvalidRequest(f"{field}: {err['msg'].removeprefix('Value error, ')}", field=field)


def parse_params(model: type[BaseModel], params: dict) -> BaseModel:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise pydantic_error(exc, "params") from None


def draw_seed(given: int | None) -> int:
    return secrets.randbelow(2**31) if given is None else given


def check_model(catalog: ModelCatalog, name: str | None, content_type: str) -> None:
    """A named model must exist (404 listing the installed ones) and make this content type."""
    if name is None:
        return
    if name not in catalog.names() and name in HUB_MODELS:
        raise ModelUnavailable(f"model {name!r} is not pulled yet", hint=f"Pull it with `genforge models pull {name}`.")
    if name not in catalog.names():
        installed = catalog.installed_names()
        raise ModelNotFound(
            f"unknown model {name!r}; installed: {', '.join(installed) or 'none'}",
            field="model",
            details={"installed": installed},
        )
    made = PACKAGED[name].content_type if name in PACKAGED else catalog.user_type(name)
    if made != content_type:
        raise InvalidRequest(f"model {name!r} makes {made}, not {content_type}", field="model")


def plan_text(req: GenerateRequest, settings: Settings, catalog: ModelCatalog) -> tuple[str | None, dict]:
    given = parse_params(TextParams, req.params)
    preset = QUALITY[req.quality]
    model = req.model or (settings.default_text_model if req.quality == "standard" else preset.model)
    params = {
        "max_tokens": given.max_tokens or preset.max_tokens,
        "temperature": preset.temperature if given.temperature is None else given.temperature,
        "top_p": given.top_p or preset.top_p,
        "seed": draw_seed(given.seed),
        "stop": given.stop or [],
    }
    if params["max_tokens"] >= settings.context_size:
        raise InvalidRequest(
            f"params.max_tokens: {params['max_tokens']} does not fit the context of {settings.context_size} tokens",
            field="params.max_tokens",
            hint=f"Ask for fewer than {settings.context_size} tokens.",
        )
    if req.messages:
        params["messages"] = req.messages
    if req.raw:
        params["raw"] = True
    check_model(catalog, model, "text")
    return model, params


def _portrait_params(given: ImageParams) -> dict:
    """The portrait model makes square faces at a few sizes from a seed; it has nothing else to set."""
    from genforge.engines.portrait import NATIVE_SIZE, SIZES

    for name in ("steps", "guidance_scale", "negative_prompt", "scheduler"):
        if getattr(given, name) is not None:
            raise InvalidRequest(
                f"params.{name}: the portrait model has no {name} (it makes a face from the seed alone)",
                field=f"params.{name}",
                hint="Leave it out, or name a diffusers model.",
            )
    width = given.width or given.height or NATIVE_SIZE
    height = given.height or width
    for name, value in (("width", width), ("height", height)):
        if value not in SIZES:
            raise InvalidRequest(
                f"params.{name}: the portrait model makes {', '.join(map(str, SIZES))} pixel squares, not {value}",
                field=f"params.{name}",
            )
    if width != height:
        raise InvalidRequest(
            f"params.height: the portrait model makes squares; width is {width}, height {height}", field="params.height"
        )
    return {"width": width, "height": height, "seed": draw_seed(given.seed)}


def _diffusers_params(given: ImageParams, settings: Settings, path: str | None) -> dict:
    native = (diffusers_native_size(path) if path else None) or 512
    width, height = given.width or native, given.height or native
    for name, value in (("width", width), ("height", height)):
        if value > settings.image_max_size:
            raise InvalidRequest(
                f"params.{name}: {value} is over the maximum of {settings.image_max_size} pixels",
                field=f"params.{name}",
                hint="Ask for a smaller image, or raise GENFORGE_IMAGE_MAX_SIZE.",
            )
    guidance = 7.5 if given.guidance_scale is None else given.guidance_scale
    if given.negative_prompt and guidance <= 1:
        raise InvalidRequest(
            "params.negative_prompt: it has no effect with guidance_scale <= 1 (no classifier-free guidance)",
            field="params.negative_prompt",
            hint="Raise guidance_scale above 1, or leave the negative prompt out.",
        )
    steps = given.steps or settings.image_default_steps
    if steps > settings.image_max_steps:
        raise InvalidRequest(
            f"params.steps: {steps} is over the maximum of {settings.image_max_steps}",
            field="params.steps",
            hint="Ask for fewer steps, or raise GENFORGE_IMAGE_MAX_STEPS.",
        )
    return {
        "width": width,
        "height": height,
        "steps": steps,
        "guidance_scale": guidance,
        "negative_prompt": given.negative_prompt or "",
        "scheduler": given.scheduler or "default",
        "seed": draw_seed(given.seed),
    }


def plan_image(req: GenerateRequest, settings: Settings, catalog: ModelCatalog) -> tuple[str | None, dict]:
    given = parse_params(ImageParams, req.params)
    if req.system is not None:
        raise InvalidRequest("system: image models take no system prompt", field="system")
    if req.quality != "standard":
        raise InvalidRequest(
            f"quality: the {req.quality!r} preset applies to text; for images set params such as steps and width",
            field="quality",
        )
    model = req.model or catalog.default_for("image")  # never a by-name-only model such as portrait
    check_model(catalog, model, "image")
    engine, path = (catalog.engine_of(model) if model else None) or ("diffusers", None)
    if engine == "portrait":
        return model, _portrait_params(given)
    # No model at all still gets complete parameters: the service answers 503 with the ways forward.
    return model, _diffusers_params(given, settings, path)


def _piper_missing(catalog: ModelCatalog, model: str | None) -> str | None:
    """Why the default speech model cannot run Piper here, or None when it can (or is not Piper)."""
    if model is None:
        return "no Piper voice is installed"
    engine = (catalog.engine_of(model) or ("", None))[0]
    if engine == "piper" and importlib.util.find_spec("piper") is None:
        return "piper-tts is not installed"
    return None


def plan_speech(req: GenerateRequest, settings: Settings, catalog: ModelCatalog) -> tuple[str | None, dict]:
    """Speech: the text is the prompt. Text over GENFORGE_SPEECH_MAX_CHARS is refused (422), not chunked.

    Model: the one named, else the default (the packaged Piper voice when installed). espeak-ng only when
    named, or when Piper is not usable and the request allows the fallback; the record then says why.
    No seed is drawn: neither engine can use one per request (see SpeechParams), and a recorded seed
    that changed nothing would claim a reproducibility the audio does not have.
    """
    given = parse_params(SpeechParams, req.params)
    if req.system is not None:
        raise InvalidRequest("system: speech takes no system prompt", field="system")
    if req.quality != "standard":
        raise InvalidRequest("quality: speech has no quality presets; choose the voice with `model`", field="quality")
    if len(req.prompt) > settings.speech_max_chars:
        raise InvalidRequest(
            f"prompt: {len(req.prompt)} characters is over the speech limit of {settings.speech_max_chars}",
            field="prompt",
            hint="Split the text into several requests, or raise GENFORGE_SPEECH_MAX_CHARS.",
        )
    if not any(ch.isalnum() for ch in req.prompt):
        raise InvalidRequest("prompt: there is nothing to speak (no letters or digits)", field="prompt")
    params = given.model_dump()
    model = req.model
    if model is None:
        model = catalog.default_for("speech")  # never espeak-ng: it is chosen by name only
        reason = _piper_missing(catalog, model)
        if reason and given.fallback and "espeak-ng" in catalog.installed_names("speech"):
            model, params["fallback_reason"] = "espeak-ng", reason
    check_model(catalog, model, "speech")
    return model, params


PLANNERS: dict[str, Planner] = {"text": plan_text, "image": plan_image, "speech": plan_speech}


def plan(req: GenerateRequest, settings: Settings, catalog: ModelCatalog) -> tuple[str | None, dict]:
    planner = PLANNERS.get(req.content_type)
    if planner is None:  # a type without an engine in this build: the record says so (503)
        check_model(catalog, req.model, req.content_type)
        return req.model or catalog.default_for(req.content_type), dict(req.params)
    return planner(req, settings, catalog)
