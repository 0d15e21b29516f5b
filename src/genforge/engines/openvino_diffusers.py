"""OpenVINO engine for diffusers checkpoints: the same diffusers pipeline, its UNet and VAE decoder run by OpenVINO.

The pipeline stays diffusers' own (tokenizer, text encoder, schedulers, step callbacks, `torch.Generator` noise),
so seeds, schedulers, progress and cancellation behave as on the torch engine; only the two heavy networks are
converted with `openvino.convert_model` and compiled for the CPU (f32 inference; optionally int8 weights through
`nncf.compress_weights`, or a UNet with int8 weights and activations through `nncf.quantize`, calibrated on real
denoising runs of the checkpoint itself, see `calibration_inputs`). optimum-intel would do the same, but its
releases pin transformers < 5.6 and huggingface_hub < 1.22, which the diffusers release genforge uses cannot run
with (docs/benchmarks.md).

The first load converts and caches the networks in `DATA_DIR/ov-cache/KEY`, KEY naming the checkpoint's sha256,
the OpenVINO version, the precision and this module's format. An entry is written into a temp folder, its
manifest (with every file's sha256) last, then renamed into place; on every load the manifest and the hashes are
checked, and an entry that does not match is rebuilt, never used. The tiny decoder (params.decoder "tiny",
genforge/engines/tiny_decoder.py) gets an entry of its own the same way, keyed by its sha256.

A pipeline this engine cannot convert (SDXL's added conditioning, LCM's timestep conditioning, a transformer
denoiser, a failed conversion) raises `ModelUnconvertible`. With GENFORGE_IMAGE_BACKEND=auto the engine then runs
the request on the torch engine in the same worker process, and the record says so in its warnings.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genforge.engines.base import (
    Emit,
    EngineOutput,
    GenerationJob,
    ImageInputs,
    OneAtATimeEngine,
    ResolvedModel,
    params_of,
)
from genforge.engines.diffusers import DiffusersEngine, render
from genforge.engines.params import DiffusersSettings
from genforge.engines.tiny_decoder import TinyDecoder, use_decoder
from genforge.errors import EngineFailed, GenforgeError, ModelUnavailable, ModelUnconvertible

if TYPE_CHECKING:
    import numpy as np
    import openvino as ov

log = logging.getLogger("genforge.engine.openvino")
FORMAT = 1  # bump when the converted files change meaning: every older cache entry is then rebuilt
NETWORKS = ("unet", "vae_decoder")
TINY_FILES = ["decoder.xml", "decoder.bin"]  # a tiny decoder's entry
MANIFEST = "manifest.json"
UNET_CONFIG = "unet_config.json"  # what the pipeline reads of its UNet, so a cached load needs no torch UNet
PRECISIONS = {"default": "fp32", "int8": "int8", "w8a8": "w8a8"}  # request name -> what runs (part of the cache key)
# w8a8 quantizes the UNet's and the text encoder's activations too (the text encoder then runs on OpenVINO);
# its decoders keep float32 compute with int8 weights, because a decoder's activations are the picture's pixels
# (banding), and so it shares the int8 tiny decoder's cache entry.
DECODER_PRECISION = {"fp32": "fp32", "int8": "int8", "w8a8": "int8"}
# w8a8's calibration: these prompts (with the empty negative prompt, classifier-free guidance at 7.5, so the UNet
# sees both halves of a guided batch) denoised by the checkpoint's own scheduler at its default size, every UNet
# input of those steps and the text encoder's token ids recorded. Fixed prompts and seeds: the same checkpoint
# quantizes to the same model.
CALIBRATION_PROMPTS = (
    "a photograph of a lighthouse on a rocky coast at dusk",
    "an oil painting portrait of an old fisherman with a grey beard",
    "a red sports car on a rainy city street at night, neon lights",
)
CALIBRATION_STEPS = 3
CALIBRATION_GUIDANCE = 7.5
UNCONVERTIBLE_HINT = (
    "Run this checkpoint on torch: set GENFORGE_IMAGE_BACKEND=torch (or auto, which falls back to torch by itself)."
)
# Conversion stages, reported as progress events with "stage": "converting" before the denoising steps.
STAGES = ("load the torch pipeline", "convert the UNet", "convert the VAE decoder", "write the cache")
W8A8_STAGES = (
    "load the torch pipeline",
    "convert the UNet",
    *(f"calibrate: denoise {prompt!r}" for prompt in CALIBRATION_PROMPTS),
    "quantize the UNet",
    "convert and quantize the text encoder",
    "convert the VAE decoder",
    "write the cache",
)


def openvino_version() -> str:
    from importlib.metadata import version

    return version("openvino")


def cache_key(model_sha256: str, ov_version: str, precision: str) -> str:
    return f"{model_sha256[:24]}-ov{ov_version}-{precision}-f{FORMAT}"


def tiny_cache_key(decoder_sha256: str, ov_version: str, precision: str) -> str:
    return f"tiny-{decoder_sha256[:24]}-ov{ov_version}-{precision}-f{FORMAT}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _networks(precision: str) -> tuple[str, ...]:
    """The converted networks of a pipeline's cache entry: w8a8's has the text encoder too."""
    return (*NETWORKS, "text_encoder") if precision == "w8a8" else NETWORKS


def _files(precision: str = "fp32") -> list[str]:
    return [UNET_CONFIG, *(f"{n}.{ext}" for n in _networks(precision) for ext in ("xml", "bin"))]


def check_entry(key_dir: Path, expected: dict, files: list[str] | None = None) -> str | None:
    """Why a cache entry cannot be used (None when it can): missing files, a manifest that does not match,
    a file whose sha256 differs from the manifest's. `files`: what the entry holds (default: a pipeline's)."""
    files = files or _files()
    try:
        manifest = json.loads((key_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return "no manifest"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest ({exc})"
    if not isinstance(manifest, dict):
        return "the manifest is not an object"
    for name, value in expected.items():
        if manifest.get(name) != value:
            return f"the manifest's {name} is {manifest.get(name)!r}, not {value!r}"
    hashes = manifest.get("files")
    if not isinstance(hashes, dict) or sorted(hashes) != sorted(files):
        return "the manifest does not list the converted files"
    for name, digest in hashes.items():
        path = key_dir / name
        try:
            if _sha256(path) != digest:
                return f"{name} does not match its sha256 in the manifest"
        except OSError as exc:
            return f"{name} is unreadable ({exc.strerror or exc})"
    return None


def write_entry(cache_dir: Path, key_dir: Path, expected: dict, files: list[str], build: Callable[[Path], None]):
    """`build(tmp)` writes `files` into a temp folder; the manifest (their sha256) goes last, then the folder is
    renamed into place, replacing a stale or corrupt entry."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".tmp-{key_dir.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build(tmp)
        manifest = {**expected, "files": {name: _sha256(tmp / name) for name in files}}
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if key_dir.exists():
            shutil.rmtree(key_dir)
        os.replace(tmp, key_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def nncf_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nncf")
    except PackageNotFoundError:
        raise ModelUnavailable(
            "int8 precisions need nncf, which is not installed",
            hint="Install the openvino extra: `pip install 'genforge[openvino]'`, or leave params.precision out.",
        ) from None


def entry_facts(precision: str, **facts) -> dict:
    """What a cache entry's manifest must say for it to be used: this module's format, the OpenVINO release, the
    precision and `facts` (the source's sha256), and nncf's release when nncf made the model."""
    expected = {"format": FORMAT, **facts, "openvino": openvino_version(), "precision": precision}
    if precision != "fp32":
        expected["nncf"] = nncf_version()
    return expected


def _to_openvino(module, example: tuple, inputs: list, precision: str):
    """A torch module as an OpenVINO model (dynamic batch and size), its weights int8 when asked (w8a8 converts
    float32 here: `quantize_w8a8` runs after the calibration, which needs the float32 model)."""
    import openvino as ov
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about shape checks in diffusers' code
        converted = ov.convert_model(module, example_input=example, input=inputs)
    if precision == "int8":
        import nncf

        nncf.set_log_level(logging.ERROR)  # its per-layer tables would flood the engine log
        converted = nncf.compress_weights(converted)  # int8 weights, f32 compute
    return converted


def quantize_w8a8(model, samples: list[dict]):
    """int8 weights and activations (nncf's post-training quantization, with SmoothQuant for the attention's
    matrix products), the activation ranges taken from `samples`, each a dict of the model's inputs by name. On a
    CPU with VNNI int8 products run several times the float32 rate (docs/benchmarks.md)."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    return nncf.quantize(
        model,
        nncf.Dataset(samples),
        subset_size=len(samples),
        model_type=nncf.ModelType.TRANSFORMER,
        # as measured; bias correction would add passes over the calibration set to a conversion of minutes
        advanced_parameters=nncf.AdvancedQuantizationParameters(disable_bias_correction=True),
    )


def _side(config) -> int:
    """A small latent size for tracing (the converted model takes any size the network can)."""
    return 4 * 2 ** (len(config.block_out_channels) - 1)


def convert_unet(unet, hidden: int, precision: str):
    """The UNet: inputs (sample, timestep, encoder_hidden_states), output the noise prediction."""
    import openvino as ov
    import torch

    class UNetForward(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    ch, side = unet.config.in_channels, _side(unet.config)
    example = (torch.randn(2, ch, side, side), torch.tensor(999.0), torch.randn(2, 77, hidden))
    inputs = [([-1, ch, -1, -1], ov.Type.f32), ([], ov.Type.f32), ([-1, -1, hidden], ov.Type.f32)]
    return _to_openvino(UNetForward(), example, inputs, precision)


def convert_decoder(vae, precision: str):
    """The VAE decoder (after post_quant_conv), or an AutoencoderTiny's: latents in, pixels in [-1, 1] out."""
    import openvino as ov
    import torch

    ch, side = vae.config.latent_channels, _side(vae.config)
    return _to_openvino(vae.decoder, (torch.randn(1, ch, side, side),), [([-1, ch, -1, -1], ov.Type.f32)], precision)


def convert_text_encoder(text_encoder):
    """A CLIP text encoder: token ids in, the last hidden state out (what the pipeline uses of it)."""
    import openvino as ov
    import torch

    class TextForward(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.text_encoder = text_encoder

        def forward(self, input_ids):
            return self.text_encoder(input_ids, return_dict=False)[0]

    ids = torch.ones(1, text_encoder.config.max_position_embeddings, dtype=torch.int64)
    return _to_openvino(TextForward(), (ids,), [([-1, -1], ov.Type.i64)], "fp32")


def compile_config(threads: int) -> dict:
    config: dict = {"INFERENCE_PRECISION_HINT": "f32"}  # bf16 on AMX CPUs would change the pixels
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class StaticShapes:
    """A converted network compiled for the input shapes it is called with. The cache keeps the model with dynamic
    shapes; OpenVINO's CPU kernels run a static-shape compile much faster (measured: docs/benchmarks.md), so each
    new shape (another size or batch) recompiles, in seconds, and only the latest compile is kept (bounded memory)."""

    def __init__(self, core: ov.Core, model: ov.Model, config: dict[str, Any]):
        self.core, self.model, self.config = core, model, config
        self._shapes: tuple[tuple[int, ...], ...] | None = None
        self._request: ov.InferRequest | None = None

    def infer(self, arrays: list[np.ndarray]) -> Any:  # the request's results: outputs by port or index
        shapes = tuple(a.shape for a in arrays)
        if shapes != self._shapes:
            import openvino as ov

            self._request = None  # release the previous compile first
            model = self.model.clone()
            model.reshape(
                {port: ov.PartialShape(list(shape)) for port, shape in zip(model.inputs, shapes, strict=True)}
            )
            try:
                self._request = self.core.compile_model(model, "CPU", self.config).create_infer_request()
            except Exception as exc:
                raise EngineFailed(
                    f"OpenVINO could not compile the network for inputs {shapes}: {type(exc).__name__}: "
                    f"{str(exc)[:300]}",
                    hint=UNCONVERTIBLE_HINT,
                ) from None
            self._shapes = shapes
        if self._request is None:  # compiled above on the first call (no shapes match None)
            raise EngineFailed("OpenVINO has no compiled network to run")
        return self._request.infer(arrays)


class _OVUNet:
    """Stands in for the pipeline's UNet: the config diffusers reads, and a call that runs the compiled UNet."""

    def __init__(self, request, config, torch):
        self._request, self._torch = request, torch
        self.config = config
        self.dtype, self.device = torch.float32, torch.device("cpu")

    def __call__(self, sample, timestep, encoder_hidden_states, return_dict=False, **extra):
        used = {k: v for k, v in extra.items() if v is not None}
        if used:  # a LoRA scale, IP-adapter embeddings...: inputs the converted UNet does not have
            raise ModelUnconvertible(
                f"the OpenVINO UNet has no input for {', '.join(sorted(used))}", hint=UNCONVERTIBLE_HINT
            )
        t = self._torch.as_tensor(timestep, dtype=self._torch.float32).reshape(())
        out = self._infer([sample.numpy(), t.numpy(), encoder_hidden_states.numpy()])
        return (self._torch.from_numpy(out[0].copy()),)

    def _infer(self, arrays: list):
        return self._request.infer(arrays)


class _RecordingUNet(_OVUNet):
    """The float32 UNet during calibration: runs the step and keeps its inputs for `quantize_w8a8`."""

    def __init__(self, request, config, torch, names: list[str]):
        super().__init__(request, config, torch)
        self.names = names
        self.samples: list[dict[str, np.ndarray]] = []

    def _infer(self, arrays: list):
        self.samples.append(dict(zip(self.names, [a.copy() for a in arrays], strict=True)))
        return super()._infer(arrays)


def calibration_inputs(pipe, model, core, threads: int, stage: Callable[[], None]) -> tuple[list[dict], list]:
    """The inputs of the UNet and of the text encoder along real denoising runs of this checkpoint:
    CALIBRATION_PROMPTS (and the empty negative prompt) through its own tokenizer and text encoder, its scheduler's
    latents at each of CALIBRATION_STEPS steps at its default size, run by `model` (the float32 UNet). The UNet's
    as dicts by its input names, the text encoder's as token-id arrays. `stage()` after each prompt."""
    import torch

    recording = _RecordingUNet(
        StaticShapes(core, model, compile_config(threads)),
        pipe.unet.config,
        torch,
        [port.get_any_name() for port in model.inputs],
    )
    token_ids: list = []
    hook = pipe.text_encoder.register_forward_pre_hook(lambda _module, args: token_ids.append(args[0].numpy().copy()))
    torch_unet, pipe.unet = pipe.unet, recording
    try:
        for i, prompt in enumerate(CALIBRATION_PROMPTS):
            pipe(
                prompt,
                negative_prompt="",
                num_inference_steps=CALIBRATION_STEPS,
                guidance_scale=CALIBRATION_GUIDANCE,
                generator=torch.Generator("cpu").manual_seed(i),
                output_type="latent",
            )
            stage()
    finally:
        pipe.unet = torch_unet
        hook.remove()
    return recording.samples, token_ids


def _ov_text_encoder(request: StaticShapes, config: Any) -> Any:  # a torch.nn.Module
    import torch

    class OVTextEncoder(torch.nn.Module):
        """Stands in for the pipeline's CLIP text encoder: token ids in, `(last hidden state,)` out."""

        dtype, device = torch.float32, torch.device("cpu")

        def __init__(self):
            super().__init__()
            self.config = config  # the pipeline reads e.g. use_attention_mask

        def forward(self, input_ids, attention_mask=None, output_hidden_states=None, **extra):
            if attention_mask is not None or output_hidden_states:  # clip_skip's hidden states, a masked encoder
                raise ModelUnconvertible(
                    "the OpenVINO text encoder has no attention mask or hidden states", hint=UNCONVERTIBLE_HINT
                )
            return (torch.from_numpy(request.infer([input_ids.numpy()])[0].copy()),)

    return OVTextEncoder()


def _ov_decoder(request: StaticShapes) -> Any:  # a torch.nn.Module
    import torch

    class OVDecoder(torch.nn.Module):
        """Stands in for `vae.decoder` (AutoencoderKL still applies post_quant_conv and the scaling)."""

        def forward(self, z, latent_embeds=None):
            return torch.from_numpy(request.infer([z.numpy()])[0].copy())

    return OVDecoder()


def _unsupported(pipe) -> str | None:
    """Why this engine cannot convert a pipeline's denoiser (None when it can)."""
    unet = getattr(pipe, "unet", None)
    if unet is None or type(unet).__name__ != "UNet2DConditionModel":
        return f"{type(pipe).__name__} has no UNet2DConditionModel (its denoiser is {type(unet).__name__})"
    cfg = unet.config
    for name in ("addition_embed_type", "time_cond_proj_dim", "class_embed_type", "encoder_hid_dim_type"):
        if cfg.get(name) is not None:
            return f"its UNet uses {name}={cfg.get(name)!r}, an input this engine does not convert"
    vae = getattr(pipe, "vae", None)
    if vae is None or type(vae).__name__ != "AutoencoderKL":
        return f"its VAE is {type(vae).__name__}, not AutoencoderKL"
    return None


class OpenVINODiffusersEngine(OneAtATimeEngine):
    kind = "openvino-diffusers"
    content_types = ("image",)

    def __init__(self, threads: int, cache_dir: Path, fallback: bool, tiny_decoder: str = ""):
        self.threads = threads
        self.cache_dir = cache_dir
        self.fallback = fallback  # GENFORGE_IMAGE_BACKEND=auto: an unconvertible pipeline runs on torch
        self.torch_engine = DiffusersEngine(threads=threads, device="cpu", tiny_decoder=tiny_decoder)
        self.tiny = TinyDecoder(tiny_decoder)
        self._tiny_compiled: tuple[str, object] | None = None  # (cache key, the AutoencoderTiny running it)
        self._full_vae = None
        self._loaded: tuple[str, str, str] | None = None  # (path, sha256, precision)
        self._pipe = None
        self._default_scheduler = None
        self._key = ""
        self._version = ""
        self._unconvertible: dict[str, ModelUnconvertible] = {}  # sha256 -> why (not retried in this process)
        self._ov: ov.Core | None = None

    # --- loading ---------------------------------------------------------------------------------
    def load(self, model: ResolvedModel) -> float:
        try:
            return self._load(model, "default", None)
        except ModelUnconvertible:
            if not self.fallback:
                raise
            return self.torch_engine.load(model)

    def _load(self, model: ResolvedModel, precision: str, emit: Emit | None) -> float:
        wanted = (model.path, model.sha256, PRECISIONS[precision])
        if self._loaded == wanted:
            return 0.0
        if model.sha256 in self._unconvertible:
            raise self._unconvertible[model.sha256]
        diffusers, _, torch = self.torch_engine._imports()
        try:
            import openvino  # noqa: F401  (here, so that a missing runtime fails as ModelUnavailable)
        except ImportError as exc:
            raise ModelUnavailable(
                f"the OpenVINO image engine needs openvino: {exc}",
                hint="Install the image extra: `pip install 'genforge[image]'`, or set GENFORGE_IMAGE_BACKEND=torch.",
            ) from None
        start = time.perf_counter()
        self._loaded = self._pipe = None
        if self.threads:
            torch.set_num_threads(self.threads)
        ov_version, prec = openvino_version(), PRECISIONS[precision]
        key = cache_key(model.sha256, ov_version, prec)
        key_dir = self.cache_dir / key
        expected = entry_facts(prec, model_sha256=model.sha256)
        problem = check_entry(key_dir, expected, _files(prec)) if key_dir.exists() else "not converted yet"
        if problem is None:
            pipe = self.torch_engine.open_pipeline(model, torch.float32, unet=None)
            config = json.loads((key_dir / UNET_CONFIG).read_text())
        else:
            pipe = self._convert(model, key_dir, expected, problem, emit)
            config = pipe.unet.config
        core = self._core()
        try:
            networks = {
                name: StaticShapes(core, core.read_model(str(key_dir / f"{name}.xml")), compile_config(self.threads))
                for name in _networks(prec)
            }
        except Exception as exc:  # the entry was checked; a read failure is the runtime's
            raise ModelUnconvertible(
                f"OpenVINO could not read the converted {model.name!r}: {type(exc).__name__}: {str(exc)[:300]}",
                hint=UNCONVERTIBLE_HINT,
            ) from None
        from diffusers.configuration_utils import FrozenDict

        pipe.unet = _OVUNet(networks["unet"], FrozenDict(config), torch)
        pipe.vae.decoder = _ov_decoder(networks["vae_decoder"])
        if "text_encoder" in networks:
            pipe.text_encoder = _ov_text_encoder(networks["text_encoder"], pipe.text_encoder.config)
        self._pipe, self._default_scheduler, self._full_vae = pipe, pipe.scheduler, pipe.vae
        self._key = key
        self._version = f"diffusers {diffusers.__version__} (OpenVINO {ov_version}, cpu)"
        self._loaded = wanted
        return (time.perf_counter() - start) * 1000

    def _convert(self, model: ResolvedModel, key_dir: Path, expected: dict, why: str, emit: Emit | None):
        """Convert the UNet and the VAE decoder into a temp folder, write the manifest last, rename into place."""
        import torch

        log.info("converting %r for OpenVINO into %s (the cache entry: %s)", model.name, key_dir.name, why)
        prec = expected["precision"]
        total, done = len(W8A8_STAGES if prec == "w8a8" else STAGES), itertools.count()

        def stage() -> None:  # the next stage begins (the last call: all are done)
            step = next(done)
            if emit is not None:
                emit({"type": "progress", "step": step, "total": total, "stage": "converting"})

        stage()
        pipe = self.torch_engine.open_pipeline(model, torch.float32)
        reason = _unsupported(pipe)
        if reason:
            err = ModelUnconvertible(
                f"the OpenVINO engine cannot convert {model.name!r}: {reason}", hint=UNCONVERTIBLE_HINT
            )
            self._unconvertible[model.sha256] = err
            raise err
        stage()
        hidden = pipe.text_encoder.config.hidden_size

        token_ids: list = []

        def unet():
            converted = convert_unet(pipe.unet, hidden, prec)
            if prec != "w8a8":
                return converted
            stage()
            samples, prompts = calibration_inputs(pipe, converted, self._core(), self.threads, stage)
            token_ids.extend(prompts)
            return quantize_w8a8(converted, samples)

        def text_encoder():
            converted = convert_text_encoder(pipe.text_encoder)
            name = converted.inputs[0].get_any_name()
            return quantize_w8a8(converted, [{name: ids} for ids in token_ids])

        def build(tmp: Path) -> None:
            self._save(unet, tmp / "unet", model.name, model.sha256)
            stage()
            if prec == "w8a8":
                self._save(text_encoder, tmp / "text_encoder", model.name, model.sha256)
                stage()
            decoder = DECODER_PRECISION[prec]
            self._save(lambda: convert_decoder(pipe.vae, decoder), tmp / "vae_decoder", model.name, model.sha256)
            stage()
            (tmp / UNET_CONFIG).write_text(json.dumps(dict(pipe.unet.config), default=str))

        write_entry(self.cache_dir, key_dir, expected, _files(prec), build)
        stage()
        return pipe

    def _core(self) -> ov.Core:
        import openvino as ov

        self._ov = self._ov or ov.Core()
        return self._ov

    def _tiny_decoder(self, module, sha: str, precision: str, emit: Emit) -> tuple:
        """The tiny decoder with its decoder converted (cached like the pipeline's networks) and compiled."""
        ov_version, prec = openvino_version(), DECODER_PRECISION[PRECISIONS[precision]]
        key = tiny_cache_key(sha, ov_version, prec)
        if self._tiny_compiled is None or self._tiny_compiled[0] != key:
            self._tiny_compiled = None
            if sha in self._unconvertible:  # not retried in this process
                raise self._unconvertible[sha]
            key_dir = self.cache_dir / key
            expected = entry_facts(prec, decoder_sha256=sha)
            problem = check_entry(key_dir, expected, TINY_FILES) if key_dir.exists() else "not converted yet"
            if problem is not None:
                log.info("converting the tiny decoder for OpenVINO into %s (the cache entry: %s)", key, problem)
                emit({"type": "progress", "step": 0, "total": 1, "stage": "converting"})
                name = f"the tiny decoder {self.tiny.path}"
                write_entry(
                    self.cache_dir,
                    key_dir,
                    expected,
                    TINY_FILES,
                    lambda tmp: self._save(lambda: convert_decoder(module, prec), tmp / "decoder", name, sha),
                )
                emit({"type": "progress", "step": 1, "total": 1, "stage": "converting"})
            core = self._core()
            try:
                network = core.read_model(str(key_dir / "decoder.xml"))
            except Exception as exc:  # the entry was checked; a read failure is the runtime's
                raise ModelUnconvertible(
                    f"OpenVINO could not read the converted tiny decoder: {type(exc).__name__}: {str(exc)[:300]}",
                    hint=UNCONVERTIBLE_HINT,
                ) from None
            runnable = copy.deepcopy(module)  # the loaded module keeps its torch decoder for other precisions
            runnable.decoder = _ov_decoder(StaticShapes(core, network, compile_config(self.threads)))
            self._tiny_compiled = (key, runnable)
        return self._tiny_compiled[1], {"decoder_cache_key": key}

    def _save(self, convert: Callable, stem: Path, name: str, sha: str) -> None:
        import openvino as ov

        try:
            ov.save_model(convert(), str(stem) + ".xml", compress_to_fp16=False)
        except GenforgeError:
            raise
        except ImportError as exc:
            raise ModelUnavailable(
                f"int8 weights need nncf: {exc}", hint="Install the openvino extra: `pip install 'genforge[openvino]'`."
            ) from None
        except (MemoryError, OSError) as exc:  # the machine's trouble (memory, disk), not the checkpoint's
            raise EngineFailed(
                f"converting {stem.name} of {name!r} failed: {type(exc).__name__}: {str(exc)[:300]}",
                hint="Conversion needs several GB of memory and disk for an SD 1.5 checkpoint; free some and retry.",
            ) from None
        except Exception as exc:  # the converter's own errors: the pipeline is not convertible as it is
            err = ModelUnconvertible(
                f"OpenVINO could not convert {stem.name} of {name!r}: {type(exc).__name__}: {str(exc)[:300]}",
                hint=UNCONVERTIBLE_HINT,
            )
            self._unconvertible[sha] = err
            raise err from None

    # --- generation --------------------------------------------------------------------------------
    def generate(self, job: GenerationJob, emit: Emit, cancelled: Callable[[], bool]) -> EngineOutput:
        p = params_of(job, DiffusersSettings)
        if isinstance(job.inputs, ImageInputs):  # img2img, inpainting, LoRAs: torch only for now
            wanted = "inpainting" if job.inputs.mask else "img2img" if job.inputs.init_image else "LoRAs"
            if not self.fallback:
                raise ModelUnconvertible(
                    f"{wanted} run on the torch backend only, and GENFORGE_IMAGE_BACKEND is openvino",
                    hint="Set GENFORGE_IMAGE_BACKEND=auto (such requests then run on torch) or torch.",
                )
            out = self.torch_engine.generate(job, emit, cancelled)
            out.engine = self.torch_engine.kind
            out.facts.warnings.append(f"ran on torch: the OpenVINO engine does not run {wanted}")
            return out
        try:
            load_ms = self._load(job.model, p.precision, emit)
            start = time.perf_counter()
            decoder = use_decoder(
                self._pipe,
                self._full_vae,
                p.decoder,
                self.tiny,
                job.model.name,
                lambda module, sha: self._tiny_decoder(module, sha, p.precision, emit),
            )
            if p.decoder == "tiny":  # loading (and on first use converting) the tiny decoder
                load_ms += (time.perf_counter() - start) * 1000
        except ModelUnconvertible as exc:
            if not self.fallback:
                raise
            out = self.torch_engine.generate(job, emit, cancelled)
            out.engine = self.torch_engine.kind
            note = f"ran on torch: {exc.message}"
            if p.precision != "default":
                note += f" (precision {p.precision!r} needs OpenVINO; torch ran float32)"
            out.facts.warnings.append(note)
            return out
        return render(
            self._pipe,
            job,
            emit,
            cancelled,
            scheduler=self.torch_engine.scheduler_for(self._default_scheduler, p.scheduler),
            engine=self.kind,
            engine_version=self._version,
            load_ms=load_ms,
            details={
                "device": "cpu",
                "dtype": "float32",
                "backend": "openvino",
                "backend_version": openvino_version(),
                "precision": PRECISIONS[p.precision],
                "cache_key": self._key,
                **decoder,
            },
        )


def create(settings) -> OpenVINODiffusersEngine:
    return OpenVINODiffusersEngine(
        threads=settings.image_threads or settings.n_threads,
        cache_dir=settings.data_dir / "ov-cache",
        fallback=settings.image_backend == "auto",
        tiny_decoder=settings.image_tiny_decoder,
    )
