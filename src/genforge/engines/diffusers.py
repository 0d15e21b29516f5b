"""diffusers engine: text-to-image with a checkpoint the operator supplies (SD 1.x/2.x, SDXL, SD-Turbo class).

A checkpoint is a diffusers directory (model_index.json) or a single .safetensors/.ckpt file,
registered with `genforge models add PATH --type image`. Everything loads from local files only,
with the Hugging Face hub disabled (HF_HUB_OFFLINE=1): a missing or incomplete checkpoint is a clear
`model_unavailable`, never a download attempt. Runs on CUDA when present, else on the CPU.

The checkpoint's own safety checker (if it ships one) stays on; when it blacks an image out the
request fails with `invalid_output` rather than storing a black picture.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genforge.engines.base import (
    Emit,
    EngineOutput,
    GenerationJob,
    ImageDetails,
    ImageFacts,
    ImageInputs,
    LoraFile,
    OneAtATimeEngine,
    ResolvedModel,
    params_of,
)
from genforge.engines.params import DiffusersSettings
from genforge.engines.tiny_decoder import TinyDecoder, use_decoder
from genforge.errors import Cancelled, InvalidOutput, ModelUnavailable
from genforge.media import images

# Set before diffusers/transformers import huggingface_hub, which reads them once.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DIFFUSERS_VERBOSITY": "error",
    "TRANSFORMERS_VERBOSITY": "error",
}

# Request name -> diffusers scheduler class; "default" keeps the checkpoint's own.
SCHEDULERS = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "heun": "HeunDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "unipc": "UniPCMultistepScheduler",
    "lcm": "LCMScheduler",
}
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
SINGLE_FILE_HINT = (
    "A single-file checkpoint needs its pipeline's config files, which genforge does not "
    "download. Convert it to a diffusers directory on a machine with hub access "
    "(`StableDiffusionPipeline.from_single_file(...).save_pretrained(DIR)`) and register DIR "
    "with `genforge models add DIR --type image`."
)


def _hub_offline() -> None:
    """Make sure the hub stays closed even if huggingface_hub was imported before this module."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return
    constants.HF_HUB_OFFLINE = True


class DiffusersEngine(OneAtATimeEngine):
    kind = "diffusers"
    content_types = ("image",)

    def __init__(self, threads: int, device: str = "auto", tiny_decoder: str = ""):
        self.threads = threads
        self.device_setting = device
        self.tiny = TinyDecoder(tiny_decoder)
        self._full_vae = None  # the checkpoint's VAE, put back for params.decoder "full"
        self._model: ResolvedModel | None = None
        self._pipe = None
        self._variants: dict[str, Any] = {}  # img2img / inpaint pipelines sharing the loaded one's components
        self._default_scheduler = None
        self._version = ""
        self._device = "cpu"
        self._dtype = None

    # --- loading ---------------------------------------------------------------------------------
    def _imports(self):
        os.environ.update(OFFLINE_ENV)
        try:
            import diffusers
            import numpy
            import torch
        except ImportError as exc:
            raise ModelUnavailable(
                f"the diffusers engine is not installed: {exc}",
                hint="Install the image extra: `pip install 'genforge[image]'` "
                "(see the README for the CPU build of torch).",
            ) from None
        _hub_offline()
        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
        try:
            import transformers

            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()
        except ImportError:  # diffusers reports it when a pipeline needs it
            pass
        return diffusers, numpy, torch

    def load(self, model: ResolvedModel) -> float:
        """Load the checkpoint (local files only); 0 when it is already loaded."""
        if self._model is not None and self._model.path == model.path and self._model.sha256 == model.sha256:
            return 0.0
        diffusers, _, torch = self._imports()
        start = time.perf_counter()
        self._model = self._pipe = self._default_scheduler = None
        self._variants = {}
        if self.threads:
            torch.set_num_threads(self.threads)
        cuda = torch.cuda.is_available()
        if self.device_setting == "cuda" and not cuda:
            raise ModelUnavailable(
                "GENFORGE_IMAGE_DEVICE is cuda, but torch sees no CUDA device",
                hint="Set GENFORGE_IMAGE_DEVICE=auto or cpu, or install a CUDA build of torch.",
            )
        self._device = "cuda" if cuda and self.device_setting in ("auto", "cuda") else "cpu"
        self._dtype = torch.float16 if self._device == "cuda" else torch.float32
        pipe = self.open_pipeline(model, self._dtype)
        self._pipe = pipe.to(self._device)
        self._default_scheduler, self._full_vae = pipe.scheduler, pipe.vae
        self._version = f"diffusers {diffusers.__version__} (torch {torch.__version__}, {self._device})"
        self._model = model
        return (time.perf_counter() - start) * 1000

    def open_pipeline(self, model: ResolvedModel, dtype, **components):
        """The checkpoint's diffusers pipeline from local files (`components` replace some, e.g. unet=None)."""
        diffusers, _, _ = self._imports()
        path = Path(model.path)
        try:
            if path.is_dir():
                pipe = diffusers.AutoPipelineForText2Image.from_pretrained(
                    str(path), local_files_only=True, dtype=dtype, **components
                )
            elif path.suffix.lower() in SINGLE_FILE_SUFFIXES:
                cls = diffusers.StableDiffusionXLPipeline if _is_sdxl(path) else diffusers.StableDiffusionPipeline
                pipe = cls.from_single_file(str(path), local_files_only=True, dtype=dtype, **components)
            else:
                raise ModelUnavailable(
                    f"model {model.name!r}: {path} is neither a diffusers directory nor a .safetensors/.ckpt file",
                    hint="Register a checkpoint with `genforge models add PATH --type image`.",
                )
        except ModelUnavailable:
            raise
        except Exception as exc:  # ValueError, OSError, the hub's LocalEntryNotFoundError, torch errors ...
            single = not path.is_dir()
            raise ModelUnavailable(
                f"diffusers could not load {model.name!r} from {path}: {type(exc).__name__}: {str(exc)[:400]}",
                hint=SINGLE_FILE_HINT
                if single
                else "The checkpoint directory is incomplete or not a text-to-image pipeline; check it with "
                "`genforge models verify`, or register a complete one with `genforge models add DIR --type image`.",
            ) from None
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def scheduler_for(self, default, name: str):
        if name == "default":
            return default
        import diffusers

        cls = getattr(diffusers, SCHEDULERS[name])
        return cls.from_config(default.config)

    # --- generation --------------------------------------------------------------------------------
    def generate(self, job: GenerationJob, emit: Emit, cancelled: Callable[[], bool]) -> EngineOutput:
        _, _, torch = self._imports()
        p = params_of(job, DiffusersSettings)
        load_ms = self.load(job.model)
        start = time.perf_counter()
        decoder = use_decoder(
            self._pipe,
            self._full_vae,
            p.decoder,
            self.tiny,
            job.model.name,
            lambda module, _sha: (module.to(self._device, self._dtype), {}),
        )
        if p.decoder == "tiny":  # loading the tiny decoder
            load_ms += (time.perf_counter() - start) * 1000
        inputs = job.inputs if isinstance(job.inputs, ImageInputs) else ImageInputs()
        pipe = self.variant("inpaint" if inputs.mask else "img2img" if inputs.init_image else "txt2img")
        with applied_loras(self._pipe, inputs.loras):
            return render(
                pipe,
                job,
                emit,
                cancelled,
                scheduler=self.scheduler_for(self._default_scheduler, p.scheduler),
                engine=self.kind,
                engine_version=self._version,
                load_ms=load_ms,
                details={
                    "device": self._device,
                    "dtype": str(self._dtype).removeprefix("torch."),
                    "backend": "torch",
                    "backend_version": torch.__version__,
                    "precision": "fp16" if self._dtype == torch.float16 else "fp32",
                    **decoder,
                },
            )

    def variant(self, mode: str):
        """The loaded pipeline for txt2img, or diffusers' img2img / inpainting pipeline made from its very
        components (no second copy of the weights)."""
        if mode == "txt2img":
            return self._pipe
        if mode not in self._variants:
            import diffusers

            cls = diffusers.AutoPipelineForInpainting if mode == "inpaint" else diffusers.AutoPipelineForImage2Image
            try:
                variant = cls.from_pipe(self._pipe)
            except Exception as exc:  # a pipeline class diffusers has no img2img/inpaint counterpart for
                raise ModelUnavailable(
                    f"{mode}: diffusers has no {mode} pipeline for {type(self._pipe).__name__}: {exc}",
                    hint="Use a Stable Diffusion (1.x, 2.x or XL) checkpoint for img2img and inpainting.",
                ) from None
            variant.set_progress_bar_config(disable=True)
            self._variants[mode] = variant
        return self._variants[mode]


@contextmanager
def applied_loras(pipe, loras: tuple[LoraFile, ...]) -> Iterator[list[dict[str, Any]]]:
    """The LoRAs loaded into the pipeline (diffusers + peft) at their weights for one job, and unloaded after it, so
    the next job runs the base weights. Never silently skipped: a LoRA that does not load fails the job."""
    if not loras:
        yield []
        return
    names = [f"lora{i}" for i in range(len(loras))]
    try:
        for name, lora in zip(names, loras, strict=True):
            pipe.load_lora_weights(lora.path, adapter_name=name)
        pipe.set_adapters(names, [lora.weight for lora in loras])
    except Exception as exc:
        _unload(pipe)
        raise ModelUnavailable(
            f"the LoRA could not be loaded into {type(pipe).__name__}: {type(exc).__name__}: {str(exc)[:300]}",
            hint="A LoRA must be made for this checkpoint's architecture (kohya or diffusers safetensors); "
            "loading one needs the `peft` package (the image extra).",
        ) from None
    try:
        yield [{"name": lora.name, "weight": lora.weight, "sha256": lora.sha256} for lora in loras]
    finally:
        _unload(pipe)


def _unload(pipe) -> None:
    pipe.unload_lora_weights()


def render(
    pipe,
    job: GenerationJob,
    emit: Emit,
    cancelled: Callable[[], bool],
    *,
    scheduler,
    engine: str,
    engine_version: str,
    load_ms: float,
    details: dict,
) -> EngineOutput:
    """Run a loaded diffusers pipeline for a job (torch or OpenVINO networks inside): progress after each
    step, cancellation between steps, the NaN and safety-checker checks, and the PNG with its provenance."""
    import numpy as np
    import torch

    start = time.perf_counter()
    p = params_of(job, DiffusersSettings)
    pipe.scheduler = scheduler

    def on_step_end(pipeline, i, _t, kwargs):
        emit({"type": "progress", "step": i + 1, "total": pipeline.num_timesteps})
        if cancelled():
            raise Cancelled(f"cancelled after step {i + 1}")
        return kwargs

    generator = torch.Generator("cpu").manual_seed(p.seed)  # CPU noise: the same latents on any device
    inputs = job.inputs if isinstance(job.inputs, ImageInputs) else ImageInputs()
    init, mask, control = _control_images(inputs, p)
    clock = StageClock(pipe)
    with torch.inference_mode(), clock:
        result = pipe(
            prompt=job.prompt,
            negative_prompt=p.negative_prompt or None,
            num_inference_steps=p.steps,
            guidance_scale=p.guidance_scale,
            generator=generator,
            output_type="np",
            callback_on_step_end=on_step_end,
            **control,
        )
    if any(getattr(result, "nsfw_content_detected", None) or []):
        raise InvalidOutput(
            "the checkpoint's safety checker flagged the image and replaced it with a black one",
            hint="Try another prompt or seed; genforge never stores the blacked-out image.",
        )
    image = result.images[0]
    if not np.isfinite(image).all():
        raise InvalidOutput(
            "the pipeline produced NaN or infinite pixel values (numerical overflow)",
            hint="Try another seed, fewer steps or a lower guidance_scale; on CUDA, float16 overflow is a known cause.",
        )
    rgb = (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if init is not None and mask is not None:  # what was not masked does not move: pasted back after decoding
        from PIL import Image

        pasted = pipe.image_processor.apply_overlay(mask, init, Image.fromarray(rgb))
        rgb = np.asarray(pasted.convert("RGB"), dtype=np.uint8)
    mode = "inpaint" if mask is not None else "img2img" if init is not None else "txt2img"
    loras = [{"name": f.name, "weight": f.weight, "sha256": f.sha256} for f in inputs.loras]
    info = ImageDetails(
        pipeline=type(pipe).__name__,
        scheduler=type(pipe.scheduler).__name__,
        denoising_steps=pipe.num_timesteps,
        stage_ms=clock.ms,
        mode=mode,
        strength=p.strength if init is not None else None,
        loras=loras or None,
        **details,
    )
    text = images.provenance(
        content_id=job.content_id,
        model=job.model.name,
        model_sha256=job.model.sha256,
        engine=engine,
        engine_version=engine_version,
        seed=p.seed,
        params=p.model_dump(mode="json"),
        prompt=job.prompt,
        details={"image": info.model_dump(exclude_none=True)},
    )
    data, pixels = images.encode_checked_png(rgb, text)
    return EngineOutput(
        data=data,
        media_type="image/png",
        engine_version=engine_version,
        load_ms=load_ms,
        generate_ms=(time.perf_counter() - start) * 1000,
        facts=ImageFacts(width=rgb.shape[1], height=rgb.shape[0], steps=p.steps, image=info),
        pixels=pixels,
    )


def _control_images(inputs: ImageInputs, p: DiffusersSettings) -> tuple[Any, Any, dict[str, Any]]:
    """(init image, mask, the pipeline call's size or image arguments): the init image scaled to the requested
    size (RGB), the mask to the same size (L, white = repaint)."""
    if inputs.init_image is None:
        return None, None, {"width": p.width, "height": p.height}
    from PIL import Image

    size = (p.width, p.height)
    try:
        with Image.open(inputs.init_image) as im:
            init = im.convert("RGB").resize(size, Image.Resampling.LANCZOS) if im.size != size else im.convert("RGB")
        mask = None
        if inputs.mask is not None:
            with Image.open(inputs.mask) as im:
                mask = im.convert("L").resize(size, Image.Resampling.NEAREST) if im.size != size else im.convert("L")
    except (OSError, ValueError) as exc:
        raise InvalidOutput(f"an input image does not decode: {exc}") from None
    strength = p.strength if p.strength is not None else 1.0
    if mask is None:
        return init, None, {"image": init, "strength": strength}
    return init, mask, {"image": init, "mask_image": mask, "strength": strength, "width": p.width, "height": p.height}


class StageClock:
    """Milliseconds of one pipeline call in its text encoder(s), its denoising loop and its decoder: forward hooks
    on the torch modules at either end (the OpenVINO stand-ins are torch modules too); the loop is the time between
    the last text encoding and the decoder's start."""

    def __init__(self, pipe: Any):  # a diffusers pipeline
        self.ms: dict[str, float] = {"text_encoder": 0.0, "denoise": 0.0, "decoder": 0.0}
        self._modules: list[tuple[str, Any]] = [  # (stage, a torch module: it has the hooks)
            (name, module)
            for name, module in (
                ("text_encoder", getattr(pipe, "text_encoder", None)),
                ("text_encoder", getattr(pipe, "text_encoder_2", None)),
                ("decoder", getattr(getattr(pipe, "vae", None), "decoder", None)),
            )
            if hasattr(module, "register_forward_hook")
        ]
        self._handles: list[Any] = []  # torch's RemovableHandle
        self._started = 0.0
        self._encoded: float | None = None  # when the last text encoding ended
        self._decoding: float | None = None  # when the decoder first started

    def _pre(self, name):
        self._started = time.perf_counter()
        if name == "decoder" and self._decoding is None:
            self._decoding = self._started

    def _post(self, name):
        now = time.perf_counter()
        self.ms[name] = round(self.ms[name] + (now - self._started) * 1000, 1)
        if name == "text_encoder":
            self._encoded = now

    def __enter__(self):
        for name, module in self._modules:
            self._handles.append(module.register_forward_pre_hook(lambda _m, _a, n=name: self._pre(n)))
            self._handles.append(module.register_forward_hook(lambda _m, _a, _o, n=name: self._post(n)))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        if self._encoded is not None and self._decoding is not None:
            self.ms["denoise"] = round((self._decoding - self._encoded) * 1000, 1)
        return False


def _is_sdxl(path: Path) -> bool:
    """SDXL single files carry a second text encoder under conditioner.embedders.1 (read from the header only)."""
    if path.suffix.lower() != ".safetensors":
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return any(k.startswith("conditioner.embedders.1.") for k in f.keys())
    except Exception:  # unreadable here: from_single_file reports it properly
        return False


def create(settings) -> DiffusersEngine:
    return DiffusersEngine(
        threads=settings.image_threads or settings.n_threads,
        device=settings.image_device,
        tiny_decoder=settings.image_tiny_decoder,
    )
