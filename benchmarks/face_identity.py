"""Face identity: how well dlib's embeddings tell the packaged portrait model's faces apart, and what it costs.

    python benchmarks/face_identity.py [--faces N] [--size 1024]

Renders N portraits (seeds 0..N-1) with the packaged portrait model, embeds each with genforge.media.faces, and
pairs them: same-face pairs are each face against itself mirrored and against a copy halved in size and saved as
JPEG at quality 75 (2N pairs); different-face pairs are every pair of different seeds (N(N-1)/2). Prints, for a
range of thresholds on similarity (1 - distance), the false-accept rate (different faces at or above it) and the
false-reject rate (same faces below it), the seconds per identity check (detection + embedding) and, as the
reference measured in the same run, the seconds per portrait. Also the seed 42 / 44 pair the acceptance check uses.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=40)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    os.environ.setdefault("GENFORGE_DATA_DIR", tempfile.mkdtemp(prefix="gf-faces-"))
    from genforge.config import Settings
    from genforge.core.catalog import ModelCatalog
    from genforge.engines.portrait import PortraitEngine
    from genforge.media.faces import FaceEmbedder, similarity
    from genforge.stores.db import Database

    settings = Settings()
    db = Database(settings.db_url)
    db.migrate()
    model = ModelCatalog(settings, db).resolve("portrait", "image")
    engine = PortraitEngine(threads=settings.n_threads)
    engine.load(model)
    embedder = FaceEmbedder()
    embedder.face(np.zeros((64, 64, 3), dtype=np.uint8))  # load dlib's models before timing

    seeds = [*range(args.faces), *(s for s in (42, 44) if s >= args.faces)]
    emb, mirrored, jpeg = {}, {}, {}
    render_s, check_s, missed = [], [], []
    for seed in seeds:
        t = time.perf_counter()
        rgb = engine.render(seed, args.size)
        render_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        face = embedder.face(rgb)
        check_s.append(time.perf_counter() - t)
        if face is None:
            missed.append(seed)
            continue
        emb[seed] = face.embedding
        flip = embedder.face(np.ascontiguousarray(rgb[:, ::-1]))
        small = Image.fromarray(rgb).resize((args.size // 2,) * 2, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=75)
        squeezed = embedder.face(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
        if flip is not None:
            mirrored[seed] = flip.embedding
        if squeezed is not None:
            jpeg[seed] = squeezed.embedding
    same = [similarity(emb[s], mirrored[s]) for s in mirrored] + [similarity(emb[s], jpeg[s]) for s in jpeg]
    base = [s for s in emb if s < args.faces]
    different = [similarity(emb[a], emb[b]) for a, b in itertools.combinations(base, 2)]
    load = os.getloadavg()[0]
    print(f"load average {load:.2f} on {os.cpu_count()} CPUs; portraits {args.size}x{args.size}")
    print(f"faces: {len(seeds)} rendered, {len(missed)} with no face detected {missed}")
    print(f"pairs: {len(same)} same-face, {len(different)} different-face")
    print(f"same-face similarity: min {min(same):.3f} median {np.median(same):.3f}")
    print(f"different-face similarity: max {max(different):.3f} median {np.median(different):.3f}")
    if 42 in emb and 44 in emb:
        print(f"seed 42 vs 44: similarity {similarity(emb[42], emb[44]):.3f}")
    print("threshold  false-accept  false-reject")
    for threshold in (0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7):
        far = sum(d >= threshold for d in different) / len(different)
        frr = sum(s < threshold for s in same) / len(same)
        print(f"{threshold:9.2f}  {far:12.4f}  {frr:12.4f}")
    r, c = float(np.median(render_s)), float(np.median(check_s))
    print(f"seconds per portrait (reference) {r:.3f}; per identity check {c:.3f}; ratio {c / r:.3f}")
    Path(os.environ["GENFORGE_DATA_DIR"]).exists()


if __name__ == "__main__":
    main()
