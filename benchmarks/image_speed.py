"""Image speed: seconds per image through POST /api/v1/content/generate vs the engine called directly.

1. portrait at 1024x1024: the API (HTTP, queue, engine worker process, validator, fsync'd artifact, database)
   against genforge's portrait engine called in a plain process, which renders and encodes the PNG the
   same way (zlib level 1, Huffman only; provenance chunks). Goal: API overhead under 5 % of that reference, and
   under 0.5 s per image through the API on 2 cores.
2. the tiny random Stable Diffusion pipeline of the tests (built on the spot): seconds per denoising step
   (the image's time over its steps, so text encoding, VAE decoding and the PNG are spread over them)
   through the API against genforge's diffusers engine called directly.

Runs alternate between the two sides so that machine noise hits both alike; medians are reported.

    .venv/bin/python benchmarks/image_speed.py [--runs 10] [--sd-runs 8] [--sd-size 64] [--sd-steps 30]

3. `--full` (instead of 1 and 2; heavy: ~15 GB RAM at its peak, ~10 GB of scratch disk, many minutes): full-size
   networks with random weights (the compute is that of real weights), built from their configurations:
   a. one denoising step of an SD 1.5-shaped UNet (860M parameters; 512x512, so 64x64 latents, batch 2 for
      classifier-free guidance): torch float32 (the reference) against the same UNet converted by genforge's
      OpenVINO engine (`convert_unet`, compiled as the engine compiles it), float32 and int8 weights; with each
      conversion's time and the process's peak RSS;
   b. an SD-Turbo-shaped pipeline (SD 2.1 UNet, OpenCLIP-H-sized text encoder, SD VAE; 1 step, guidance 0,
      512x512) saved as a diffusers directory and generated through the API of a real `genforge serve`, once
      with GENFORGE_IMAGE_BACKEND=torch and once with openvino: seconds per image, the first request's load
      (the conversion, for OpenVINO) and the engine worker's peak RSS; each with the checkpoint's full VAE decoder
      and with a tiny decoder (params.decoder "tiny": an AutoencoderTiny with diffusers' default TAESD
      configuration and random weights, GENFORGE_IMAGE_TINY_DECODER), with the engine's time in each stage (text
      encoder, the UNet step, decoder) from the record.

    nice -n 10 .venv/bin/python benchmarks/image_speed.py --full [--full-runs 3] [--full-precisions fp32,int8,w8a8]
                                                         [--full-decoders full,tiny] [--full-backends openvino,torch]
                                                         [--full-3b-precision default|int8|w8a8]
                                                         [--full-skip-api | --full-skip-unet]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _server import GENFORGE, Server, rss_mb

ROOT = Path(__file__).resolve().parent.parent

# The reference: genforge's engine in its own plain process (no server, no worker, no database), one
# generation per line on stdin, answering {"s": seconds for render + PNG encode, "bytes": PNG size}.
DIRECT = r"""
import json, sys, time, uuid
from pathlib import Path
from genforge.core.catalog import PACKAGED, ModelCatalog, ResolvedModel
from genforge.config import Settings
from genforge.contenttypes.image import DiffusersSettings, PortraitSettings
from genforge.engines import create_engine
from genforge.engines.base import GenerationJob
from genforge.media.files import path_stat, sha256_path
kind, path, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if kind == "portrait":
    path = str(ModelCatalog(Settings(), db=None).packaged_path(PACKAGED["portrait"]))
model = ResolvedModel("bench", "image", kind, path, sha256_path(Path(path)), path_stat(Path(path))[0], False)
engine = create_engine(kind, Settings())
t = time.perf_counter()
engine.load(model)
print(json.dumps({"load_s": time.perf_counter() - t}), flush=True)
for line in sys.stdin:
    typed = PortraitSettings(**params) if kind == "portrait" else DiffusersSettings(**params)
    job = GenerationJob(str(uuid.uuid4()), "image", model, "a lighthouse at dusk", None, typed)
    t = time.perf_counter()
    out = engine.generate(job, lambda event: None, lambda: False)
    print(json.dumps({"s": time.perf_counter() - t, "bytes": len(out.data)}), flush=True)
"""


class Direct:
    def __init__(self, kind: str, path: str, params: dict, data_dir: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DIRECT, kind, path, json.dumps(params)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "GENFORGE_DATA_DIR": data_dir},
        )
        self.load_s = json.loads(self.proc.stdout.readline())["load_s"]

    def run(self) -> dict:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def api_run(client: httpx.Client, body: dict) -> tuple[float, dict]:
    t = time.perf_counter()
    resp = client.post("/api/v1/content/generate", json=body)
    elapsed = time.perf_counter() - t
    if resp.status_code != 201:
        raise SystemExit(f"the generation failed: {resp.status_code} {resp.text[:1000]}")
    return elapsed, resp.json()


def compare(client: httpx.Client, body: dict, direct: Direct, runs: int) -> dict:
    api_run(client, body)  # warm-up: starts the image worker and loads the model there
    direct.run()
    api_s, direct_s, engine_s = [], [], []
    for i in range(runs):
        body = {**body, "params": {**body["params"], "seed": 1000 + i}}
        elapsed, rec = api_run(client, body)
        api_s.append(elapsed)
        engine_s.append(rec["timings"]["generate_ms"] / 1000)
        direct_s.append(direct.run()["s"])
    api, ref = statistics.median(api_s), statistics.median(direct_s)
    return {
        "api": api,
        "direct": ref,
        "engine_in_worker": statistics.median(engine_s),
        "api_min": min(api_s),
        "direct_min": min(direct_s),
        "ratio": api / ref,
        "overhead_ms": (api - ref) * 1000,
        "overhead_pct": (api - ref) / ref * 100,
        "record": rec,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10, help="portrait images per side")
    ap.add_argument("--sd-runs", type=int, default=8, help="tiny diffusers images per side")
    ap.add_argument("--sd-size", type=int, default=64)
    ap.add_argument("--sd-steps", type=int, default=30)
    ap.add_argument("--full", action="store_true", help="the full-size case (3.) instead of 1 and 2")
    ap.add_argument("--full-runs", type=int, default=3, help="timed runs per side in the full-size case")
    ap.add_argument(
        "--full-precisions",
        default="fp32,int8",
        help="OpenVINO in 3a: fp32, int8 (weights), w8a8 (the engine's quantization, random calibration inputs)",
    )
    ap.add_argument("--full-skip-api", action="store_true", help="3a only (no SD-Turbo-shaped pipeline, no server)")
    ap.add_argument("--full-skip-unet", action="store_true", help="3b only")
    ap.add_argument("--full-decoders", default="full,tiny", help="decoders measured in 3b (full, tiny)")
    ap.add_argument("--full-backends", default="openvino,torch", help="backends measured in 3b")
    ap.add_argument(
        "--full-3b-precision", default="default", help="params.precision of 3b on OpenVINO: default, int8 or w8a8"
    )
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "tests"))
    if args.full:
        with tempfile.TemporaryDirectory(prefix="gf-bench-full-") as scratch:
            full(args, Path(scratch))
        return
    from image_fixtures import build_tiny_sd

    with tempfile.TemporaryDirectory(prefix="gf-bench-images-") as scratch:
        run(args, build_tiny_sd(Path(scratch) / "tiny-sd"), scratch)


def run(args, tiny: Path, scratch: str) -> None:
    sd_params = {"width": args.sd_size, "height": args.sd_size, "steps": args.sd_steps, "seed": 1}
    portrait_params = {"width": 1024, "height": 1024, "seed": 1}

    env = {"GENFORGE_PRELOAD": "false", "GENFORGE_IMAGE_BACKEND": "torch"}  # the tiny case compares torch alike
    with Server(env=env) as srv, httpx.Client(base_url=srv.url, timeout=600) as client:
        added = subprocess.run(
            [GENFORGE, "models", "add", str(tiny), "--type", "image", "--name", "tiny-sd"],
            env=srv.env,
            capture_output=True,
            text=True,
        )
        assert added.returncode == 0, added.stderr

        direct = Direct("portrait", "", portrait_params, scratch)
        portrait = compare(
            client,
            {"content_type": "image", "prompt": "a lighthouse at dusk", "model": "portrait", "params": portrait_params},
            direct,
            args.runs,
        )
        portrait["load_s"] = direct.load_s
        direct.close()

        direct = Direct(
            "diffusers",
            str(tiny),
            {**sd_params, "guidance_scale": 7.5, "negative_prompt": "", "scheduler": "default"},
            scratch,
        )
        sd = compare(
            client,
            {"content_type": "image", "prompt": "a lighthouse at dusk", "model": "tiny-sd", "params": sd_params},
            direct,
            args.sd_runs,
        )
        sd["load_s"] = direct.load_s
        direct.close()
        server_rss = rss_mb(srv.proc.pid)

    rec = portrait["record"]
    load1, load5, _ = os.getloadavg()
    print(
        f"{os.cpu_count()} cores, load average {load1:.1f} / {load5:.1f} (1 / 5 min) at the end; "
        f"{rec['model']['engine_version']}; "
        f"{sd['record']['model']['engine_version']}"
    )
    print(
        f"portrait 1024x1024 ({args.runs} alternating runs, PNG zlib level 1 Huffman-only, "
        f"{rec['artifact']['size_bytes'] / 1e6:.2f} MB):"
    )
    print(f"  direct engine + PNG encode: {portrait['direct']:.3f} s/image (median; min {portrait['direct_min']:.3f})")
    print(
        f"  through the API:            {portrait['api']:.3f} s/image (median; min {portrait['api_min']:.3f}); "
        f"engine time in the worker {portrait['engine_in_worker']:.3f} s"
    )
    print(
        f"  API overhead: {portrait['overhead_ms']:.1f} ms = {portrait['overhead_pct']:.1f} % of the reference "
        f"(goal < 5 %); ratio API / direct = {portrait['ratio']:.3f}; model load {portrait['load_s']:.2f} s"
    )
    steps = args.sd_steps
    print(f"tiny diffusers {args.sd_size}x{args.sd_size}, {steps} steps ({args.sd_runs} alternating runs):")
    print(f"  direct engine + PNG encode: {sd['direct'] / steps:.4f} s/step ({sd['direct']:.3f} s/image)")
    print(f"  through the API:            {sd['api'] / steps:.4f} s/step ({sd['api']:.3f} s/image)")
    print(
        f"  API overhead: {sd['overhead_ms']:.1f} ms/image = {sd['overhead_pct']:.1f} %; "
        f"ratio API / direct = {sd['ratio']:.3f}"
    )
    print(f"server RSS (server + engine workers): {server_rss:.0f} MB")


# --- 3. full size ----------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_peak_mb(pid: int) -> float:
    """The largest peak RSS (VmHWM) among a process's children: the engine worker's."""
    peak = 0.0
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return peak


def timed(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def unet_step(args) -> dict:
    """3a, printing each figure as soon as it is measured (the whole case takes long on a loaded machine)."""
    import gc

    import openvino as ov
    import torch
    from diffusers import UNet2DConditionModel

    from genforge.engines.openvino_diffusers import StaticShapes, compile_config, convert_unet, quantize_w8a8

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    # SD 1.5: the default blocks (320, 640, 1280, 1280), 8 heads, cross-attention 768 (CLIP ViT-L), 64x64 latents
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8).eval()
    params = sum(p.numel() for p in unet.parameters())
    print(f"{threads} cores; {loads()} at the start", flush=True)
    print(f"3a. SD 1.5-shaped UNet ({params / 1e6:.0f}M parameters), one step, 64x64 latents, batch 2 "
          f"(median of {args.full_runs} after a warm-up):", flush=True)  # fmt: skip
    sample, t, text = torch.randn(2, 4, 64, 64), torch.tensor(999.0), torch.randn(2, 77, 768)
    with torch.inference_mode():
        ref = timed(lambda: unet(sample, t, text, return_dict=False), args.full_runs)
    out = {"torch fp32": ref}
    print(f"  torch float32:          {ref:.2f} s/step  1.00x  (peak RSS {peak_rss_mb():.0f} MB; "
          f"{loads()})", flush=True)  # fmt: skip
    core = ov.Core()
    for precision in args.full_precisions.split(","):
        start = time.perf_counter()
        if precision == "w8a8":
            model = convert_unet(unet, 768, "fp32")
            model = quantize_w8a8(model, random_calibration(model))
        else:
            model = convert_unet(unet, 768, precision)
        conv = time.perf_counter() - start
        start = time.perf_counter()
        inputs = [sample.numpy(), t.numpy(), text.numpy()]
        request = StaticShapes(core, model, compile_config(threads))  # compiled for these shapes, as the engine does
        request.infer(inputs)
        comp = time.perf_counter() - start  # the compile and the first step
        s = out[f"openvino {precision}"] = timed(lambda r=request, x=inputs: r.infer(x), args.full_runs)
        print(
            f"  OpenVINO {precision}: {s:.2f} s/step  {ref / s:.2f}x  (convert {conv:.0f} s, "
            f"compile + first step {comp:.0f} s, peak RSS {peak_rss_mb():.0f} MB; {loads()}); "
            f"a 20-step image's UNet: torch {20 * ref:.0f} s, this {20 * s:.0f} s",
            flush=True,
        )
        del model, request
        gc.collect()
    return out


def random_calibration(model) -> list[dict]:
    """8 random UNet inputs across the timesteps, for `quantize_w8a8`: enough for the speed, which does not depend
    on the values (the engine calibrates on real denoising runs of the checkpoint, for the quality)."""
    import numpy as np

    rng = np.random.default_rng(0)
    names = [i.get_any_name() for i in model.inputs]  # sample, timestep, encoder_hidden_states
    return [
        dict(zip(names, [rng.standard_normal((2, 4, 64, 64), np.float32), np.float32(t),
                         rng.standard_normal((2, 77, 768), np.float32)], strict=True))
        for t in np.linspace(999, 1, 8)
    ]  # fmt: skip


def sd_turbo_pipeline(path: Path) -> Path:
    """An SD-Turbo-shaped pipeline (SD 2.1 layout) with random weights; the tokenizer is the tests' byte-level
    one (its small vocabulary changes only the embedding table, not the compute)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from image_fixtures import _byte_level_vocab

    torch.manual_seed(0)
    vocab = _byte_level_vocab()
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel(
            sample_size=64, attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True
        ),
        vae=AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        ),
        text_encoder=CLIPTextModel(
            CLIPTextConfig(
                hidden_size=1024,
                intermediate_size=4096,
                num_attention_heads=16,
                num_hidden_layers=23,
                projection_dim=1024,
                hidden_act="gelu",
                vocab_size=len(vocab),
                max_position_embeddings=77,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
            )
        ),
        tokenizer=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77),
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            num_train_timesteps=1000,
            timestep_spacing="trailing",
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(path))
    return path


def tiny_decoder(path: Path) -> Path:
    """diffusers' default AutoencoderTiny configuration (the TAESD layout for SD 1.x/2.x) with random weights. Its
    default initialisation makes a picture of channel standard deviation ~1.9 of 255, which the image validator
    rightly refuses as near-constant; the last convolution's weights scaled 30x give ~38 (the compute is the same)."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    tiny = AutoencoderTiny()
    with torch.no_grad():
        tiny.decoder.layers[-1].weight.mul_(30)
    tiny.save_pretrained(str(path))
    return path


def loads() -> str:
    return "load average {:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg())


def turbo_through_api(args, checkpoint: Path, tiny: Path, backend: str) -> None:
    """One server per backend; each decoder's first request (the conversion, for OpenVINO), then the timed runs.
    Prints each case as soon as it is measured."""
    body = {
        "content_type": "image",
        "prompt": "a lighthouse at dusk",
        "model": "turbo",
        "params": {"width": 512, "height": 512, "steps": 1, "guidance_scale": 0.0, "seed": 1},
    }
    env = {
        "GENFORGE_PRELOAD": "false",
        "GENFORGE_IMAGE_BACKEND": backend,
        "GENFORGE_GENERATION_TIMEOUT_S": "3600",
        "GENFORGE_IMAGE_TINY_DECODER": str(tiny),
    }
    with Server(env=env) as srv, httpx.Client(base_url=srv.url, timeout=3600) as client:
        added = subprocess.run(
            [GENFORGE, "models", "add", str(checkpoint), "--type", "image", "--name", "turbo"],
            env=srv.env,
            capture_output=True,
            text=True,
        )
        assert added.returncode == 0, added.stderr
        for decoder in args.full_decoders.split(","):
            params = {**body["params"], "decoder": decoder}
            if backend == "openvino":
                params["precision"] = args.full_3b_precision
            first_s, first = api_run(client, {**body, "params": params})
            times, engine, stages, rec = [], [], [], first
            for i in range(args.full_runs):
                elapsed, rec = api_run(client, {**body, "params": {**params, "seed": 2 + i}})
                times.append(elapsed)
                engine.append(rec["timings"]["generate_ms"] / 1000)
                stages.append(rec["image"]["stage_ms"])
            stage = {k: statistics.median(s[k] for s in stages) / 1000 for k in stages[0]}
            other = statistics.median(engine) - sum(stage.values())
            print(
                f"  {backend:8} {rec['image']['precision']} {decoder:4} decoder: {statistics.median(times):.2f} s/image"
                f" through the API (min {min(times):.2f}); engine {statistics.median(engine):.2f} s = text encoder "
                f"{stage['text_encoder']:.2f} + UNet step {stage['denoise']:.2f} + decoder {stage['decoder']:.2f} "
                f"+ rest (scheduler, PNG) {other:.2f}; first request {first_s:.0f} s, of which load/convert "
                f"{first['timings']['load_ms'] / 1000:.0f} s; worker peak RSS {children_peak_mb(srv.proc.pid):.0f} MB; "
                f"{rec['model']['engine_version']}; {loads()}",
                flush=True,
            )
            assert rec["image"]["decoder"] == decoder, rec["image"]


def full(args, scratch: Path) -> None:
    if not args.full_skip_unet:
        unet_step(args)
    if args.full_skip_api:
        return
    checkpoint = sd_turbo_pipeline(scratch / "sd-turbo-shaped")
    tiny = tiny_decoder(scratch / "taesd-shaped")
    print(
        f"3b. SD-Turbo-shaped pipeline, 512x512, 1 step, guidance 0, through the API (median of {args.full_runs}); "
        f"goal: under 2.5 s per image; {loads()} at the start",
        flush=True,
    )
    for backend in args.full_backends.split(","):
        turbo_through_api(args, checkpoint, tiny, backend)


if __name__ == "__main__":
    main()
