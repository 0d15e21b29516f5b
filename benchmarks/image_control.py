"""img2img at strength 0.5 against text-to-image at the same steps, on the torch diffusers engine.

    python benchmarks/image_control.py CHECKPOINT_DIR [--size 256] [--steps 8] [--runs 3]

Both run through the engine the service uses (engines/diffusers.py: the same pipeline components, img2img made
with from_pipe), with the same seed, prompt and steps; the init image is the text-to-image result. Prints the
median seconds of each and their ratio (goal <= 0.6: img2img at 0.5 runs half the denoising steps, plus one VAE
encode), with the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from genforge.engines.base import GenerationJob, ImageInputs, ResolvedModel
    from genforge.engines.diffusers import DiffusersEngine
    from genforge.engines.params import DiffusersSettings
    from genforge.media.files import sha256_path

    engine = DiffusersEngine(threads=os.cpu_count() or 1)
    model = ResolvedModel("bench", "image", "diffusers", str(args.checkpoint), sha256_path(args.checkpoint), 0, False)
    engine.load(model)
    common = dict(
        width=args.size,
        height=args.size,
        steps=args.steps,
        guidance_scale=7.5,
        negative_prompt="",
        scheduler="default",
        seed=1,
    )
    init = Path(tempfile.mkdtemp()) / "init.png"

    def run(params: DiffusersSettings, inputs: ImageInputs | None) -> tuple[float, bytes]:
        job = GenerationJob("bench", "image", model, "a lighthouse at dusk", None, params, inputs=inputs)
        start = time.perf_counter()
        out = engine.generate(job, lambda _e: None, lambda: False)
        return time.perf_counter() - start, out.data

    _, png = run(DiffusersSettings(**common), None)  # warm-up, and the init image
    init.write_bytes(png)
    engine.variant("img2img")  # made once per loaded checkpoint
    txt, i2i = [], []
    for _ in range(args.runs):
        txt.append(run(DiffusersSettings(**common), None)[0])
        params = DiffusersSettings(**common, init_image="bench", strength=0.5)
        i2i.append(run(params, ImageInputs(init_image=str(init)))[0])
    t, i = statistics.median(txt), statistics.median(i2i)
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.size}x{args.size}, {args.steps} steps"
    )
    print(f"text-to-image {t:.3f} s (reference); img2img at strength 0.5 {i:.3f} s; ratio {i / t:.2f}")


if __name__ == "__main__":
    main()
