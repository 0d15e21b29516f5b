"""The reference of benchmarks/post_pipeline.py: a post's four parts made by genforge's engines called directly,
in this process (no HTTP, database, queue, worker process or validator), with the parameters the API's records
say it used. Reads a JSON list of the post's records on stdin per run; prints one JSON line of seconds per part."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from genforge.config import Settings
from genforge.contenttypes import REGISTRY
from genforge.contenttypes.image import PortraitSettings
from genforge.contenttypes.speech import SpeechSettings
from genforge.contenttypes.text import TextSettings
from genforge.contenttypes.video import VideoSettings
from genforge.core.catalog import PACKAGED, ModelCatalog
from genforge.engines import create_engine
from genforge.engines.base import BatchingEngine, Done, Failed, GenerationJob, ResolvedModel, VideoInputs


def resolved(name: str) -> ResolvedModel:
    spec = PACKAGED[name]
    path = ModelCatalog(SETTINGS, db=None).packaged_path(spec)
    return ResolvedModel(name, spec.content_type, spec.engine, str(path), "-", path.stat().st_size, spec.chat)


def run(engine, job: GenerationJob):
    if isinstance(engine, BatchingEngine):
        events = engine.submit(job)
        while True:
            for ev in events:
                if isinstance(ev, Done):
                    return ev.output
                if isinstance(ev, Failed):
                    raise ev.error
            events = engine.step()
    return engine.generate(job, lambda ev: None, lambda: False)


SETTINGS_OF = {"caption": TextSettings, "image": PortraitSettings, "narration": SpeechSettings, "video": VideoSettings}
SETTINGS = Settings(data_dir=Path(tempfile.mkdtemp(prefix="gf-parts-")))
engines: dict[str, object] = {}
for line in sys.stdin:
    records = json.loads(line)
    times, files = {}, {}
    for part in ("caption", "image", "narration", "video"):
        rec = records[part]
        spec = REGISTRY[rec["content_type"]]
        model = resolved(rec["model"]["name"])
        engine = engines.get(model.engine) or engines.setdefault(model.engine, create_engine(model.engine, SETTINGS))
        engine.load(model)
        inputs = VideoInputs(files["image"], files["narration"]) if part == "video" else None
        params = SETTINGS_OF[part].model_validate(rec["params"])
        job = GenerationJob(part, rec["content_type"], model, rec["prompt"], rec.get("system"), params, inputs=inputs)
        start = time.perf_counter()
        out = run(engine, job)
        times[part] = time.perf_counter() - start
        path = os.path.join(SETTINGS.data_dir, part + spec.suffix)
        Path(path).write_bytes(out.data)
        files[part] = path
        if part == "video":
            times["video_s"] = out.facts.duration_s
    print(json.dumps(times), flush=True)
