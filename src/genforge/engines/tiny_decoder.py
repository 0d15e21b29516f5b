"""The tiny decoder (params.decoder "tiny"): a diffusers `AutoencoderTiny` (the TAESD layout) from
GENFORGE_IMAGE_TINY_DECODER decodes the latents in place of the checkpoint's VAE, at about 1/18 of its compute
(141 against 2,515 GFLOP for a 64x64 latent at 512x512, counted with torch's FlopCounterMode).

Both diffusers engines use it: the torch engine runs it as it is, the OpenVINO engine converts its decoder and caches
it like the UNet (keyed by the tiny decoder's sha256). Before each use it is checked against the checkpoint: the same
latent channels and the same upscaling as the checkpoint's VAE, else a typed error; a request for "tiny" never gets
the full decoder in its place. Whether it was trained on the checkpoint's latent space (TAESD for SD 1.x/2.x, TAESDXL
for SDXL, both 4 channels) cannot be told from its files; the record names its sha256.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from genforge.errors import ModelUnavailable
from genforge.media.files import path_stat, sha256_path

UNLOADABLE_HINT = (
    "Point GENFORGE_IMAGE_TINY_DECODER at a diffusers AutoencoderTiny directory (config.json with "
    '"_class_name": "AutoencoderTiny" and its weights, e.g. TAESD for SD 1.x/2.x), or leave params.decoder out.'
)
MISMATCH_HINT = (
    "The tiny decoder must be made for this checkpoint's latent space (TAESD for SD 1.x/2.x, TAESDXL for SDXL): "
    "point GENFORGE_IMAGE_TINY_DECODER at the right one, or leave params.decoder out for the checkpoint's own VAE."
)


class TinyDecoder:
    """The AutoencoderTiny of GENFORGE_IMAGE_TINY_DECODER, loaded on first use and again when its files change."""

    def __init__(self, path: str):
        self.path = path
        self._loaded: tuple | None = None  # (path_stat, module, sha256)

    def load(self):
        """(the torch AutoencoderTiny in float32 on the CPU, its directory's sha256)."""
        if not self.path:  # the planner refuses "tiny" first; this is a worker started with other settings
            raise ModelUnavailable("GENFORGE_IMAGE_TINY_DECODER is not set", hint=UNLOADABLE_HINT)
        path = Path(self.path)
        try:
            config = json.loads((path / "config.json").read_text())
            stat = path_stat(path)
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(
                f"the tiny decoder {path} has no readable config.json: {exc}", hint=UNLOADABLE_HINT
            ) from None
        if self._loaded is not None and self._loaded[0] == stat:
            return self._loaded[1], self._loaded[2]
        kind = config.get("_class_name") if isinstance(config, dict) else None
        if kind != "AutoencoderTiny":
            raise ModelUnavailable(
                f"the tiny decoder {path} is a {kind or 'config without _class_name'}, not an AutoencoderTiny",
                hint=UNLOADABLE_HINT,
            )
        from diffusers import AutoencoderTiny

        try:
            module = AutoencoderTiny.from_pretrained(str(path), local_files_only=True).eval()
        except Exception as exc:  # missing or truncated weights, a config that does not build
            raise ModelUnavailable(
                f"diffusers could not load the tiny decoder {path}: {type(exc).__name__}: {str(exc)[:300]}",
                hint=UNLOADABLE_HINT,
            ) from None
        self._loaded = (stat, module, sha256_path(path))
        return module, self._loaded[2]


def check_fits(tiny, full_vae, scale_factor: int | None, model_name: str, path: str) -> None:
    """A typed error unless the tiny decoder takes the checkpoint's latents and upscales them as its VAE does."""
    want, got = full_vae.config.latent_channels, tiny.config.latent_channels
    if got != want:
        raise ModelUnavailable(
            f"the tiny decoder {path} takes {got} latent channels; {model_name!r} makes {want}", hint=MISMATCH_HINT
        )
    up = tiny.config.upsampling_scaling_factor ** (len(tiny.config.num_decoder_blocks) - 1)
    if scale_factor and up != scale_factor:
        raise ModelUnavailable(
            f"the tiny decoder {path} upscales latents {up}x; {model_name!r}'s VAE upscales {scale_factor}x",
            hint=MISMATCH_HINT,
        )


def use_decoder(pipe, full_vae, choice: str, tiny: TinyDecoder, model_name: str, prepare: Callable) -> dict:
    """Put the request's decoder into the pipeline; returns the record's facts about it. `prepare(module, sha256)`
    gives the engine's runnable form of the tiny decoder and extra facts (the OpenVINO cache key)."""
    if choice == "full":
        pipe.vae = full_vae
        return {"decoder": "full"}
    module, sha = tiny.load()
    check_fits(module, full_vae, getattr(pipe, "vae_scale_factor", None), model_name, tiny.path)
    runnable, extra = prepare(module, sha)
    pipe.vae = runnable
    return {"decoder": "tiny", "decoder_sha256": sha, **extra}
