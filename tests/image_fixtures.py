"""Helpers for the image tests: a tiny Stable Diffusion pipeline built on the spot, and PNG inspection.

The pipeline is real diffusers code with small random weights (UNet with block_out_channels (32, 64),
attention only at the lower resolution, a small AutoencoderKL, a 2-layer CLIP text encoder of width 32,
a CLIP tokenizer from a hand-written byte-level vocabulary, an Euler scheduler, no safety checker). It
saves to a few MB and runs 64x64 in a fraction of a second per step on 2 cores. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROMPT_WARNING = "the portrait model ignores the prompt; the image depends on the seed only"
_built: dict[tuple[Path, bool, bool], Path] = {}


def _byte_level_vocab() -> dict[str, int]:
    """CLIP's byte-to-unicode alphabet, each symbol alone and at the end of a word (no merges needed)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = [], 0
    for b in range(256):
        if b in printable:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    return vocab


def build_tiny_sd(path: Path, *, black: bool = False, time_cond_proj_dim: int | None = None) -> Path:
    """Save a tiny random text-to-image pipeline to `path` (a diffusers directory).

    `black=True` makes the VAE decoder output a constant -10 (all-black after diffusers' post-processing):
    real diffusers code producing the all-black image a safety checker or a NaN overflow gives.
    `time_cond_proj_dim` gives the UNet LCM-style guidance conditioning (an input the OpenVINO engine does not
    convert; diffusers on torch runs it).
    """
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    vocab = _byte_level_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=32,
        time_cond_proj_dim=time_cond_proj_dim,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=64,
    )
    if black:
        with torch.no_grad():
            vae.decoder.conv_out.weight.zero_()
            vae.decoder.conv_out.bias.fill_(-10.0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(vocab),
            max_position_embeddings=77,
            projection_dim=32,
        )
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(str(path))
    return path


def tiny_sd(root: Path, *, black: bool = False, lcm: bool = False) -> Path:
    """The tiny pipeline, built once per test session under `root` (a session temp dir); `lcm`: with a UNet
    that takes LCM's guidance conditioning."""
    key = (root, black, lcm)
    if key not in _built or not (_built[key] / "model_index.json").is_file():
        target = root / ("tiny-sd" + ("-black" if black else "") + ("-lcm" if lcm else ""))
        shutil.rmtree(target, ignore_errors=True)
        _built[key] = build_tiny_sd(target, black=black, time_cond_proj_dim=8 if lcm else None)
    return _built[key]


def build_tiny_decoder(path: Path, *, latent_channels: int = 4) -> Path:
    """Save a tiny random AutoencoderTiny (the TAESD layout, 16 channels, two decoder blocks: latents upscaled 2x,
    as the tiny pipeline's VAE does) to `path`; `latent_channels` other than 4 makes one that does not fit."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(1)
    AutoencoderTiny(
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=latent_channels,
    ).save_pretrained(str(path))
    return path


def copy_checkpoint(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


# --- PNG inspection ---------------------------------------------------------------------------------
def decode(png: bytes):
    """(PIL image in RGB, its text chunks)."""
    from PIL import Image

    im = Image.open(io.BytesIO(png))
    im.load()
    assert im.format == "PNG"
    return im.convert("RGB"), dict(im.text)


def pixels_sha256(png: bytes) -> str:
    return hashlib.sha256(decode(png)[0].tobytes()).hexdigest()


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """Every (type, data) chunk of a PNG, checking each CRC."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        crc = int.from_bytes(png[pos + 8 + length : pos + 12 + length], "big")
        assert zlib.crc32(kind + data) == crc, f"bad CRC in {kind!r}"
        chunks.append((kind, data))
        pos += 12 + length
    return chunks


def image_data(png: bytes) -> bytes:
    """The PNG without its text chunks and its C2PA manifest (caBX): header and compressed pixels (what the
    seed alone decides)."""
    skip = (b"tEXt", b"iTXt", b"zTXt", b"caBX")
    return b"".join(kind + data for kind, data in png_chunks(png) if kind not in skip)


def stats(png: bytes) -> dict:
    import numpy as np

    rgb = np.asarray(decode(png)[0], dtype=np.float32)
    return {
        "size": (rgb.shape[1], rgb.shape[0]),
        "std": float(rgb.std()),
        "red_minus_blue": float(rgb[..., 0].mean() - rgb[..., 2].mean()),
    }


def build_tiny_lora(checkpoint: Path, path: Path, *, kohya: bool = False, seed: int = 5) -> Path:
    """A LoRA with random non-zero weights for the tiny pipeline's UNet attention layers, saved as safetensors in
    the diffusers/PEFT key layout (`unet.NAME.lora_A.weight`) or, with `kohya`, in kohya's
    (`lora_unet_NAME.lora_down.weight`, with alpha)."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    unet = UNet2DConditionModel.from_pretrained(str(checkpoint / "unet"))
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, mod in unet.named_modules():
        if not isinstance(mod, torch.nn.Linear) or not (".attn1." in name or ".attn2." in name):
            continue
        if name.rsplit(".attn", 1)[1].split(".", 1)[1] not in ("to_q", "to_k", "to_v", "to_out.0"):
            continue
        down = torch.randn(4, mod.in_features, generator=g) * 0.5
        up = torch.randn(mod.out_features, 4, generator=g) * 0.5
        if kohya:
            key = "lora_unet_" + name.replace(".", "_")
            state |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(4.0)}
        else:
            state |= {f"unet.{name}.lora_A.weight": down, f"unet.{name}.lora_B.weight": up}
    save_file(state, str(path))
    return path


def png_bytes(rgb, fmt: str = "PNG", **save) -> bytes:
    """An array (H, W, 3) or a PIL image as a file of `fmt`."""
    from PIL import Image

    im = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()
