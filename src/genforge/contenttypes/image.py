"""Images: diffusers checkpoints and the packaged portrait model; the image validator."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from genforge.contenttypes.base import ContentTypeSpec, Plan, check_model, draw_seed, facts_of, parse_params
from genforge.contenttypes.records import RecordBase
from genforge.engines import imagebackend
from genforge.engines.base import ImageFacts
from genforge.engines.params import (
    IMG2IMG_STRENGTH,
    INPAINT_STRENGTH,
    SEED_LIMIT,
    DiffusersSettings,
    ImageDecoder,
    ImagePrecision,
    ImageScheduler,
    ImageSettings,
    LoraUse,
    PortraitSettings,
)
from genforge.errors import InvalidOutput, InvalidRequest
from genforge.media.images import PORTRAIT_NATIVE_SIZE, PORTRAIT_SIZES, PREFIX, diffusers_native_size

if TYPE_CHECKING:
    from genforge.engines.base import EngineOutput, GenerationJob

SIZE_LIMIT = 16_384  # the schema's bound; GENFORGE_IMAGE_MAX_SIZE bounds it further at run time
STEPS_LIMIT = 10_000  # likewise GENFORGE_IMAGE_MAX_STEPS
# An image whose every channel has a standard deviation below this (on 0..255) is near-constant: the
# all-black picture a safety checker substitutes, NaN output cast to zeros, a blank canvas.
MIN_IMAGE_STDDEV = 2.0
TINY_DECODER_HINT = (
    "Set GENFORGE_IMAGE_TINY_DECODER to a diffusers AutoencoderTiny directory (config.json and weights; TAESD for "
    "SD 1.x/2.x checkpoints, TAESDXL for SDXL), or leave params.decoder out for the checkpoint's own VAE."
)


class ImageParams(BaseModel):
    """Image generation parameters; unset ones get the model's defaults (recorded in the record). Strict: JSON
    types must match (no "64" for 64)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    width: int | None = Field(default=None, gt=0, le=SIZE_LIMIT, multiple_of=8)
    height: int | None = Field(default=None, gt=0, le=SIZE_LIMIT, multiple_of=8)
    steps: int | None = Field(default=None, ge=1, le=STEPS_LIMIT)
    guidance_scale: float | None = Field(default=None, ge=0, le=50)
    negative_prompt: str | None = Field(default=None, max_length=10_000)
    seed: int | None = Field(default=None, ge=0, lt=SEED_LIMIT)
    scheduler: ImageScheduler | None = None
    precision: ImagePrecision | None = None
    decoder: ImageDecoder | None = None
    init_image: str | None = Field(
        default=None, min_length=1, max_length=64, description="img2img: a content id of an image, or an upload id."
    )
    mask: str | None = Field(
        default=None, min_length=1, max_length=64, description="Inpainting (white = repaint): a content or upload id."
    )
    strength: float | None = Field(default=None, gt=0, le=1)
    loras: list[LoraUse] | None = Field(default=None, max_length=8)
    reference_images: list[str] | None = Field(default=None, max_length=8)
    reference_scale: float | None = Field(default=None, ge=0, le=2)


class ImageRecord(ImageFacts, RecordBase):
    content_type: Literal["image"]
    params: ImageSettings


def _portrait_params(given: ImageParams) -> PortraitSettings:
    """The portrait model makes square faces at a few sizes from a seed; it has nothing else to set."""
    for name in (
        "steps",
        "guidance_scale",
        "negative_prompt",
        "scheduler",
        "precision",
        "decoder",
        "init_image",
        "mask",
        "strength",
        "loras",
    ):
        if getattr(given, name) is not None:
            raise InvalidRequest(
                f"params.{name}: the portrait model has no {name} (it makes a face from the seed alone)",
                field=f"params.{name}",
                hint="Leave it out, or name a diffusers model.",
            )
    width = given.width or given.height or PORTRAIT_NATIVE_SIZE
    height = given.height or width
    for name, value in (("width", width), ("height", height)):
        if value not in PORTRAIT_SIZES:
            raise InvalidRequest(
                f"params.{name}: the portrait model makes {', '.join(map(str, PORTRAIT_SIZES))} pixel "
                f"squares, not {value}",
                field=f"params.{name}",
            )
    if width != height:
        raise InvalidRequest(
            f"params.height: the portrait model makes squares; width is {width}, height {height}",
            field="params.height",
        )
    return PortraitSettings(width=width, height=height, seed=draw_seed(given.seed))


def _control(given: ImageParams, settings, catalog) -> dict[str, Any]:
    """img2img, inpainting and LoRA settings, checked: a mask needs an init image, strength needs one, each LoRA
    must be a registered LoRA, and the OpenVINO backend (when chosen, not auto) refuses what it cannot run."""
    if given.reference_images or given.reference_scale is not None:
        field = "params.reference_images" if given.reference_images else "params.reference_scale"
        raise InvalidRequest(
            f"{field}: reference images (IP-Adapter) are not available on this server yet",
            field=field,
            hint="Use params.init_image (img2img) or a persona's reference_images with an identity policy.",
        )
    if given.mask and not given.init_image:
        raise InvalidRequest("params.mask: inpainting needs params.init_image too", field="params.mask")
    if given.strength is not None and not given.init_image:
        raise InvalidRequest("params.strength: it applies to params.init_image (img2img)", field="params.strength")
    names = [lora.name for lora in given.loras or []]
    for i, name in enumerate(names):
        if catalog.type_of(name) != "lora":
            raise InvalidRequest(
                f"params.loras.{i}.name: {name!r} is no registered LoRA",
                field=f"params.loras.{i}.name",
                hint="Register one with `genforge models add FILE --type lora --name NAME`.",
            )
        if names.index(name) != i:
            raise InvalidRequest(f"params.loras.{i}.name: {name!r} is named twice", field=f"params.loras.{i}.name")
    wants = [
        w
        for w, on in (("img2img", given.init_image and not given.mask), ("inpainting", given.mask), ("LoRA", names))
        if on
    ]
    if wants and settings.image_backend == "openvino":
        field = "params.init_image" if given.init_image else "params.loras"
        raise InvalidRequest(
            f"{field}: {' and '.join(wants)} run on the torch backend only; this server's "
            "GENFORGE_IMAGE_BACKEND is openvino",
            field=field,
            hint="Set GENFORGE_IMAGE_BACKEND=auto (such requests then run on torch) or torch.",
        )
    strength = given.strength
    if given.init_image and strength is None:
        strength = INPAINT_STRENGTH if given.mask else IMG2IMG_STRENGTH
    return {"init_image": given.init_image, "mask": given.mask, "strength": strength, "loras": tuple(given.loras or ())}


def _diffusers_params(given: ImageParams, settings, path: str | None, control: dict[str, Any]) -> DiffusersSettings:
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
    precision = given.precision or "default"
    if precision != "default" and imagebackend.diffusers_engine(settings) != imagebackend.OPENVINO:
        raise InvalidRequest(
            f"params.precision: {precision} needs the OpenVINO backend, and this server runs diffusers on torch",
            field="params.precision",
            hint="Leave precision out, or set GENFORGE_IMAGE_BACKEND=openvino (or auto on a machine without CUDA).",
        )
    decoder = given.decoder or "full"
    if decoder == "tiny" and not settings.image_tiny_decoder:
        raise InvalidRequest(
            "params.decoder: this server has no tiny decoder (GENFORGE_IMAGE_TINY_DECODER is not set)",
            field="params.decoder",
            hint=TINY_DECODER_HINT,
        )
    return DiffusersSettings(
        precision=precision,
        decoder=decoder,
        width=width,
        height=height,
        steps=steps,
        guidance_scale=guidance,
        negative_prompt=given.negative_prompt or "",
        scheduler=given.scheduler or "default",
        seed=draw_seed(given.seed),
        **control,
    )


def plan(req, settings, catalog) -> Plan:
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
        return Plan(model, _portrait_params(given))
    # No model at all still gets complete parameters: the service answers 503 with the ways forward.
    params = _diffusers_params(given, settings, path, _control(given, settings, catalog))
    if params.strength is not None and int(params.steps * params.strength) < 1:
        raise InvalidRequest(
            f"params.strength: {params.strength} of {params.steps} steps runs no denoising step",
            field="params.strength",
            hint="Raise strength or steps so that steps x strength is at least 1.",
        )
    inputs = {role: (ref, "image") for role, ref in (("init_image", params.init_image), ("mask", params.mask)) if ref}
    return Plan(model, params, inputs=inputs or None)


def validate(out: EngineOutput, job: GenerationJob) -> None:
    """A real PNG of the requested size that is not blank and carries its provenance.

    Engines that measured the pixels they encoded (`out.pixels`, genforge.media.images.PixelCheck) get their PNG's
    bytes checked instead of decoded again: every chunk against its CRC, IHDR to IEND, the size and format
    in IHDR. Any other PNG is decoded in full and measured here.
    """
    from PIL import Image, ImageStat, PngImagePlugin, UnidentifiedImageError

    from genforge.media.digests import pixels_digest
    from genforge.media.images import png_chunks

    if out.media_type != "image/png":
        raise InvalidOutput(f"the image engine returned {out.media_type!r}, not image/png")
    facts = out.facts
    if not isinstance(facts, ImageFacts):
        raise InvalidOutput(f"the image engine reported {type(facts).__name__}, not ImageFacts")
    try:
        with Image.open(io.BytesIO(out.data)) as im:
            if out.pixels is None:
                im.load()
                stddev = max(ImageStat.Stat(im if im.mode == "RGB" else im.convert("RGB")).stddev)
                content_hash = pixels_digest(im)
            else:
                png_chunks(out.data)
                if im.mode != "RGB" or im.size != (out.pixels.width, out.pixels.height):
                    raise InvalidOutput(f"the PNG ({im.mode} {im.size}) is not the image the engine measured")
                stddev, content_hash = out.pixels.stddev_max, out.pixels.digest
            # Unloaded, `info` has the text chunks before IDAT, where encode_png writes them (`text` would decode).
            # Only a PNG has `text`; any other format fails the format check below.
            chunks: dict[Any, Any] = im.info
            if out.pixels is None and isinstance(im, PngImagePlugin.PngImageFile):
                chunks = im.text
            fmt, size, text = im.format, im.size, dict(chunks)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidOutput(f"the image does not decode: {exc}") from None
    if fmt != "PNG":
        raise InvalidOutput(f"the image is {fmt}, not PNG")
    p = job.params
    if not isinstance(p, PortraitSettings | DiffusersSettings):
        raise InvalidOutput(f"an image job has {type(p).__name__} parameters")
    wanted = (p.width, p.height)
    if size != wanted:
        raise InvalidOutput(f"the image is {size[0]}x{size[1]}, {wanted[0]}x{wanted[1]} was requested")
    if stddev < MIN_IMAGE_STDDEV:
        raise InvalidOutput(
            f"the image is constant or nearly so (largest channel standard deviation {stddev:.2f}): "
            "a blank, black or NaN picture is not a generated image"
        )
    if text.get(PREFIX + "seed") != str(p.seed) or not text.get(PREFIX + "content_id"):
        raise InvalidOutput("the PNG does not carry its provenance (content id, seed)")
    facts.content_hash = content_hash  # of the pixels: finds the record of a stripped copy


def check_model_path(path: Path) -> str:
    """An image model is a diffusers directory (model_index.json) or one .safetensors/.ckpt file."""
    if path.is_dir():
        index = path / "model_index.json"
        try:
            pipeline = json.loads(index.read_text()).get("_class_name")
        except (OSError, ValueError, AttributeError):
            pipeline = None
        if not pipeline:
            raise InvalidRequest(
                f"{path} is not a diffusers checkpoint directory (no readable model_index.json)",
                field="path",
                hint="Point at the directory that holds model_index.json, or at a single .safetensors/.ckpt file.",
            )
        return "diffusers"
    if path.suffix.lower() not in (".safetensors", ".ckpt"):
        raise InvalidRequest(
            f"{path} is not an image checkpoint: expected a diffusers directory or a .safetensors/.ckpt file",
            field="path",
        )
    with open(path, "rb") as f:
        head = f.read(9)
    if path.suffix.lower() == ".safetensors":  # 8-byte little-endian header length, then a JSON object
        size = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
        if not (head[8:9] == b"{" and 2 <= size <= path.stat().st_size - 8):
            raise InvalidRequest(f"{path} is not a safetensors file (its header is not valid)", field="path")
    elif not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch zip archive or a pickle
        raise InvalidRequest(
            f"{path} is not a PyTorch checkpoint (neither a zip archive nor a pickle)",
            field="path",
        )
    return "diffusers"


LORA_KEY_MARKS = ("lora_A", "lora_B", "lora_down", "lora_up", "lora.down", "lora.up")
LORA_HEADER_LIMIT = 100_000_000  # bytes of JSON header read to recognise a LoRA


def check_lora_path(path: Path) -> str:
    """`models add FILE --type lora`: a .safetensors file whose tensors are LoRA pairs (kohya's lora_down/lora_up,
    or the diffusers/PEFT lora_A/lora_B layout). Read from the header only."""
    if not path.is_file() or path.suffix.lower() != ".safetensors":
        raise InvalidRequest(f"{path} is not a LoRA: expected one .safetensors file", field="path")
    with open(path, "rb") as f:
        head = f.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else 0
        if not 2 <= size <= min(LORA_HEADER_LIMIT, path.stat().st_size - 8):
            raise InvalidRequest(f"{path} is not a safetensors file (its header is not valid)", field="path")
        try:
            header = json.loads(f.read(size))
        except ValueError:
            raise InvalidRequest(f"{path} is not a safetensors file (its header is not JSON)", field="path") from None
    keys = [k for k in header if k != "__metadata__"] if isinstance(header, dict) else []
    if not any(mark in k for k in keys for mark in LORA_KEY_MARKS):
        raise InvalidRequest(
            f"{path} holds no LoRA weights (no lora_A/lora_B or lora_down/lora_up tensors)",
            field="path",
            hint="Register a full checkpoint with --type image instead.",
        )
    return "lora"


def record_section(row) -> dict:
    return facts_of(row, ImageFacts)


SPEC = ContentTypeSpec(
    name="image",
    params=ImageParams,
    settings=ImageSettings,
    facts=ImageFacts,
    record=ImageRecord,
    plan=plan,
    validate=validate,
    media_type="image/png",
    suffix=".png",
    no_model_hint="Register a Stable Diffusion checkpoint (a diffusers directory or a .safetensors/.ckpt file) "
    "with `genforge models add PATH --type image`, or ask for the packaged face generator with "
    '"model": "portrait" (it ignores the prompt; `genforge models pull portrait` installs it).',
    check_model_path=check_model_path,
    record_section=record_section,
)
