"""`genforge doctor`: the original system's checklist, made real."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from genforge.config import Settings
from genforge.contenttypes import REGISTRY
from genforge.contenttypes.records import present, record_as
from genforge.contenttypes.request import GenerateRequest
from genforge.contenttypes.speech import SpeechRecord
from genforge.contenttypes.text import TextRecord
from genforge.core.caller import LOCAL
from genforge.engines import imagebackend
from genforge.errors import GenforgeError, InvalidRequest
from genforge.media.private import private_dir
from genforge.redact import redact_text, redact_url
from genforge.runtime import Runtime

# Long enough (a few hundred tokens) to exercise multi-token prompt evaluation, where a llama.cpp
# build with broken CPU kernels (AMX on some Xeons) crashes while one-token decoding still works.
SMOKE_PROMPT = ("Here are notes from a lighthouse keeper's log. " * 30) + "Summarise them in one sentence."


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    hint: str | None = None


def _engine_check() -> Check:
    try:
        import llama_cpp
    except ImportError as exc:
        return Check(
            "text engine",
            False,
            f"llama-cpp-python not importable: {exc}",
            "Run the README's set-up command, or `pip install 'genforge[text]'`.",
        )
    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    features = " ".join(p.split("=")[0].strip() for p in info.split("|") if p.strip().endswith("= 1"))
    return Check("text engine", True, f"llama-cpp-python {llama_cpp.__version__}; CPU features: {features}")


def _data_dir_check(settings: Settings) -> Check:
    try:
        private_dir(settings.data_dir)
        with tempfile.NamedTemporaryFile(dir=settings.data_dir) as f:
            f.write(b"genforge doctor")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return Check(
            "data directory",
            False,
            f"{settings.data_dir} is not writable: {exc}",
            "Point GENFORGE_DATA_DIR at a writable directory.",
        )
    return Check("data directory", True, f"{settings.data_dir} is writable")


def _distributed_checks(rt: Runtime) -> tuple[list[Check], set[str]]:
    """The celery mode: the broker, the workers (and the types each serves), the shared artifact directory.
    Returns the checks and the content types some worker serves (the smoke generations run on those)."""
    from genforge.distributed.celery_queue import CeleryJobRunner, workers_serving

    settings, runner = rt.settings, rt.runner
    if not isinstance(runner, CeleryJobRunner):  # run_checks calls this in the celery mode only
        raise GenforgeError("the distributed checks need the celery mode's job runner")
    try:
        runner.redis.ping()
    except Exception as exc:  # reported as a failed check with its reason
        hint = "Start Redis and point GENFORGE_BROKER_URL at it (redis://HOST:6379/0)."
        broker = redact_url(settings.broker_url)
        return [Check("broker", False, f"{broker} unreachable: {redact_text(str(exc))}", hint)], set()
    checks = [Check("broker", True, f"{redact_url(settings.broker_url)} answers")]
    workers = workers_serving(runner.app)
    served = {t for types in workers.values() for t in types}
    detail = "; ".join(f"{name} serves {', '.join(types)}" for name, types in sorted(workers.items()))
    checks.append(
        Check(
            "workers",
            bool(workers),
            detail or "no `genforge worker` answers on the broker",
            None if workers else "Start `genforge worker` (same GENFORGE_* settings) on the worker machines.",
        )
    )
    shared = settings.artifacts_dir
    try:
        private_dir(shared)
        with tempfile.NamedTemporaryFile(dir=shared) as f:
            f.write(b"genforge doctor")
            f.flush()
            os.fsync(f.fileno())
        ok, detail = True, f"{shared} is writable"
    except OSError as exc:
        ok, detail = False, f"{shared} is not writable: {exc}"
    hint = "Mount one directory on every API and worker machine and set GENFORGE_ARTIFACT_DIR to it."
    checks.append(Check("shared artifact directory", ok, detail, None if ok else hint))
    return checks, served


def _smoke_text(rt: Runtime) -> Check:
    name = rt.settings.default_text_model
    req = GenerateRequest(content_type="text", prompt=SMOKE_PROMPT, params={"max_tokens": 32, "seed": 1})
    try:
        made = rt.service.generate(req, LOCAL)
    except GenforgeError as exc:
        return Check(f"smoke generation (text, {name})", False, f"[{exc.code}] {exc.message}", exc.hint)
    rt.service.delete(made.id, LOCAL)  # the smoke test leaves no content behind
    rec = record_as(made, TextRecord)
    tokens = rec.usage.completion_tokens
    gen_s = present(rec.timings.generate_ms, "generate time", rec) / 1000
    load_ms = present(rec.timings.load_ms, "load time", rec)
    # A remote model may report no token counts (the record's usage is null then, never made up).
    counted = (
        f"{tokens} tokens in {gen_s:.2f} s ({tokens / gen_s:.1f} tok/s incl. prompt)"
        if tokens is not None
        else f"generated in {gen_s:.2f} s (the model reported no token counts)"
    )
    return Check(
        f"smoke generation (text, {name})",
        True,
        f"{rec.usage.prompt_tokens}-token prompt, {counted}, load {load_ms:.0f} ms, stored and hashed, record removed",
    )


SPEECH_SMOKE_TEXT = "Genforge checks that speech works. This is the second sentence."


def _smoke_speech(rt: Runtime) -> list[Check]:
    """A real synthesis (validated: decodes, not silent, plausible length) with each installed speech engine:
    the default voice, and espeak-ng when it is installed."""
    names = [n for n in (rt.catalog.default_for("speech"), "espeak-ng") if n]
    names = list(dict.fromkeys(n for n in names if n in rt.catalog.installed_names("speech")))
    if not names:
        return [Check("speech", True, "no speech model installed (optional): " + REGISTRY["speech"].no_model_hint)]
    checks: list[Check] = []
    for name in names:
        req = GenerateRequest(content_type="speech", prompt=SPEECH_SMOKE_TEXT, model=name, params={})
        try:
            made = rt.service.generate(req, LOCAL)
        except GenforgeError as exc:
            checks.append(Check(f"smoke generation (speech, {name})", False, f"[{exc.code}] {exc.message}", exc.hint))
            continue
        rt.service.delete(made.id, LOCAL)  # the smoke test leaves no content behind
        rec = record_as(made, SpeechRecord)
        gen_s = present(rec.timings.generate_ms, "generate time", rec) / 1000
        duration_s = present(rec.duration_s, "audio duration", rec)
        rtf = gen_s / duration_s
        load_ms = present(rec.timings.load_ms, "load time", rec)
        checks.append(
            Check(
                f"smoke generation (speech, {name})",
                True,
                f"{rec.model.engine_version}: {duration_s:.2f} s of audio at "
                f"{rec.sample_rate} Hz in {gen_s:.2f} s (real-time factor {rtf:.3f}),"
                f" load {load_ms:.0f} ms, validated (decodes, not silent, plausible "
                "length), stored and hashed, record removed",
            )
        )
    return checks


def _smoke_image(rt: Runtime) -> list[Check]:
    """The image engines' libraries, and a real portrait (validated, PNG with provenance) when it is installed.
    diffusers checkpoints are not run here (minutes on a CPU); their files are re-hashed above."""
    import importlib.metadata as metadata
    import importlib.util

    dists = ("pillow", "numpy", "openvino", "torch", "diffusers", "transformers", "safetensors")
    missing = [d for d in dists if importlib.util.find_spec("PIL" if d == "pillow" else d) is None]
    if missing:
        return [
            Check(
                "image engines",
                True,
                f"image extra not installed (optional; missing {', '.join(missing)}): "
                "`bash scripts/install.sh text,image` or `pip install 'genforge[image]'`",
            )
        ]
    import torch  # only to tell where diffusers will run

    checks = [
        Check(
            "image engines",
            True,
            f"diffusers {metadata.version('diffusers')} with torch "
            f"{torch.__version__} ({'CUDA' if torch.cuda.is_available() else 'CPU, no CUDA device'}); "
            f"OpenVINO {metadata.version('openvino')}; diffusers checkpoints run on "
            f"{imagebackend.diffusers_engine(rt.settings)} (GENFORGE_IMAGE_BACKEND={rt.settings.image_backend})",
        )
    ]
    if "portrait" not in rt.catalog.installed_names("image"):
        return [
            *checks,
            Check("image model portrait", True, "not installed (optional): " + REGISTRY["image"].no_model_hint),
        ]
    req = GenerateRequest(content_type="image", prompt="doctor", model="portrait", params={"width": 256, "seed": 1})
    try:
        rec = rt.service.generate(req, LOCAL)
    except GenforgeError as exc:
        return [*checks, Check("smoke generation (image, portrait)", False, f"[{exc.code}] {exc.message}", exc.hint)]
    rt.service.delete(rec.id, LOCAL)  # the smoke test leaves no content behind
    generate_s = present(rec.timings.generate_ms, "generate time", rec) / 1000
    load_s = present(rec.timings.load_ms, "load time", rec) / 1000
    return [
        *checks,
        Check(
            "smoke generation (image, portrait)",
            True,
            f"256x256 face in {generate_s:.2f} s, load "
            f"{load_s:.2f} s, validated (decodes, size, not constant, "
            "provenance), stored and hashed, record removed",
        ),
    ]


def run_checks(settings: Settings) -> list[Check]:
    checks = [_engine_check(), _data_dir_check(settings)]
    try:
        rt = Runtime.open(settings)
    except InvalidRequest as exc:  # settings that cannot work (the celery mode without its shared parts)
        return [*checks, Check("settings", False, exc.message, exc.hint)]
    except Exception as exc:  # reported as a failed check with its reason
        return [
            *checks,
            Check(
                "database",
                False,
                f"cannot open or migrate {redact_url(settings.db_url)}: {redact_text(str(exc))}",
                "Check GENFORGE_DATABASE_URL and that the data directory is writable.",
            ),
        ]
    try:
        current, head = rt.db.migration_state()
        checks.append(
            Check("database", current == head, f"{settings.db_url.split('://')[0]} schema {current} (newest {head})")
        )
        served = set(REGISTRY)
        if rt.distributed:  # the smoke generations below then run on the workers, through the broker
            distributed, served = _distributed_checks(rt)
            checks.extend(distributed)
        installed = [e for e in rt.catalog.entries() if e.installed or e.source == "user"]
        if settings.default_text_model not in {e.name for e in installed}:
            checks.append(
                Check(
                    f"model {settings.default_text_model}",
                    False,
                    "not installed",
                    f"Install it with `genforge models pull {settings.default_text_model}`.",
                )
            )
        for result in rt.catalog.verify():
            checks.append(
                Check(
                    f"model {result.name}",
                    result.ok,
                    result.detail,
                    None if result.ok else f"Reinstall with `genforge models pull {result.name}`.",
                )
            )
        if (
            checks[0].ok
            and "text" in served
            and settings.default_text_model in {e.name for e in installed if e.installed}
        ):
            checks.append(_smoke_text(rt))
        if "speech" in served:
            checks.extend(_smoke_speech(rt))
        if "image" in served:
            checks.extend(_smoke_image(rt))
    finally:
        rt.close()
    return checks
