"""ContentService: the ONE path a request takes: plan -> authorize -> record -> queue -> engine -> validate -> store
-> finalize.

Every entry point (the native API, /v1, the CLI, posts, variants, the distributed workers) comes through here with
a `Caller` (core/caller.py). Authorization is decided here, on the final plan: after a persona filled in the
request, every model it will run is checked against the caller's allow-list, and every stored input it names must
be the caller's, before any record exists. Another key's ids answer exactly like unknown ones.

A record ends `succeeded` only after the engine ran, the validator passed, the artifact is durable with its
sha256, and the final commit went through while the record was still this run's (core/records.py). Every other
outcome ends `failed` (or `cancelled`) with a typed error that carries the record's id.
"""

from __future__ import annotations

import builtins
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from genforge.config import Settings
from genforge.contenttypes import ContentRecord, Plan, spec_of
from genforge.contenttypes.records import PersonaUse, Status
from genforge.contenttypes.request import GenerateRequest
from genforge.contenttypes.transcript import word_error_rate, words_of
from genforge.core import metrics
from genforge.core.access import JobSlots
from genforge.core.caller import LOCAL, Caller
from genforge.core.catalog import ModelCatalog
from genforge.core.identity import IdentityCheck, Reference
from genforge.core.jobs import Job, JobQueue
from genforge.core.limits import check_inputs, check_limits, output_limits
from genforge.core.records import (
    ArtifactCheck,
    ContentPage,
    Outcome,
    PendingRecord,
    RecordExtra,
    SqlContentRecords,
    StoredFile,
    elapsed_ms,
    now,
)
from genforge.core.uploads import UploadStore
from genforge.engines.base import (
    AudioInput,
    CaptionWord,
    Emit,
    EngineClient,
    EngineOutput,
    GenerationJob,
    IdentityPolicy,
    ImageFacts,
    ImageInputRef,
    ImageInputs,
    ListenBack,
    LoraFile,
    SpeechFacts,
    TextPolicy,
    VideoFacts,
    VideoInputs,
)
from genforge.engines.params import (
    SEED_LIMIT,
    DiffusersSettings,
    LoraUse,
    SpeechSettings,
    TranscriptSettings,
    VideoSettings,
)
from genforge.errors import (
    ArtifactChanged,
    ArtifactLost,
    Cancelled,
    Conflict,
    DatabaseUnavailable,
    GenforgeError,
    Interrupted,
    InvalidOutput,
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    OffSchema,
    PolicyViolation,
)
from genforge.media.files import sha256_file
from genforge.redact import redact_url
from genforge.stores.artifacts import ArtifactStore, StoredArtifact
from genforge.stores.credentials import Credentials, describe

log = logging.getLogger("genforge.core.service")
CANCEL_WAIT_S = 15.0  # how long a job told to stop at shutdown may take to record that it stopped
SUCCESS_COMMIT_RETRY_S = 30.0  # how long a finished generation waits for a locked database before it fails
T = TypeVar("T")


@dataclass(frozen=True)
class Applied:
    """A request with a persona's defaults filled in: the request, what came from the persona, its text policy."""

    request: GenerateRequest
    use: PersonaUse
    policy: TextPolicy | None
    identity: IdentityPolicy | None = None  # images: the persona's face, measured (core/identity.py)


class PersonaSource(Protocol):
    """Where the core finds a persona to apply (genforge.platform.personas.PersonaStore implements it; the core
    never imports the platform layer). `apply` raises NotFound for a persona the caller may not use."""

    def apply(
        self, ref: str, req: GenerateRequest, caller: Caller, engine_of: Callable[[str | None], str | None]
    ) -> Applied: ...


@dataclass(frozen=True)
class Planned:
    """A request authorized for a caller: the final request (persona applied), its plan, what came from a
    persona. Nothing is recorded yet."""

    request: GenerateRequest
    plan: Plan
    use: PersonaUse | None


@dataclass(frozen=True)
class Accepted:
    """A request that passed planning and authorization: its id, its plan, the clock it started on, and, in
    the distributed mode, the run a worker took it as (core/records.py)."""

    content_id: str
    request: GenerateRequest
    plan: Plan
    started: float
    run: int | None = None


class ContentService:
    def __init__(
        self,
        settings: Settings,
        records: SqlContentRecords,
        catalog: ModelCatalog,
        store: ArtifactStore,
        engines: EngineClient,
        runner: JobQueue,
        slots: JobSlots | None = None,
        personas: PersonaSource | None = None,
    ):
        self.settings = settings
        self.records = records
        self.db = records.db
        self.catalog = catalog
        self.store = store
        self.engines = engines
        self.runner = runner
        self.slots = slots or JobSlots()
        self.uploads = UploadStore(
            records.db, settings.uploads_dir, settings.upload_max_bytes, settings.upload_max_pixels
        )
        self.identity = IdentityCheck(catalog)  # a persona's face, measured (its models load on first use)
        self.personas = personas  # set by the runtime (the platform's PersonaStore); None: requests name none
        self.closing = False  # set when the runtime shuts down: database retries give up
        self.credentials = Credentials(settings.data_dir, enabled=settings.credentials != "off")
        if self.credentials.enabled:
            self.credentials.ensure()  # the instance's CA and signing key, made on first start

    # --- planning and authorization -------------------------------------------------------------------
    def plan(self, req: GenerateRequest, caller: Caller, policy: TextPolicy | None = None) -> Planned:
        """The request made final and authorized for `caller`, recording nothing: the persona applied (one the
        caller may use), the content type's planner run, the server's limits checked, the model the plan will
        run checked against the caller's allow-list, and the stored inputs it names checked to be the caller's.
        `policy` (a post's character limit) joins the persona's forbidden phrases as the text's policy."""
        use, identity = None, None
        if req.persona:
            if self.personas is None:
                raise InvalidRequest("persona: this server has no personas", field="persona")
            applied = self.personas.apply(req.persona, req, caller, self._engine_of)
            req, use, identity = applied.request, applied.use, applied.identity
            if applied.policy is not None:
                policy = replace(policy or TextPolicy(), forbidden_phrases=applied.policy.forbidden_phrases)
        plan = spec_of(req.content_type).plan(req, self.settings, self.catalog)
        caller.check_model(plan.model)
        check_limits(req, plan.params, self.settings)
        if policy is not None and req.content_type == "text":
            plan = replace(plan, policy=policy)
        if identity is not None and req.content_type == "image":
            plan = replace(plan, identity=identity)
        self._check_inputs(plan, caller)  # a video's inputs must exist, and be the caller's, before its record
        if req.content_type == "video":  # and be within the server's limits (a narration)
            check_inputs(self._video_files(plan), self.settings)
        self._check_upload(plan, caller)
        return Planned(req, plan, use)

    def _engine_of(self, model: str | None) -> str | None:
        found = self.catalog.engine_of(model) if model else None
        return found[0] if found else None

    # --- the one path ------------------------------------------------------------------------------------
    def submit(self, req: GenerateRequest, caller: Caller, policy: TextPolicy | None = None) -> Job:
        """Accept a request for `caller`: plan and authorize it, write its `pending` record (owned by the caller)
        and queue it (or raise QueueFull). The caller's job slots are held until the job ends."""
        planned = self.plan(req, caller, policy)
        req, plan, use = planned.request, planned.plan, planned.use
        accepted = Accepted(str(uuid.uuid4()), req, plan, time.perf_counter())
        extra: RecordExtra = {}
        if plan.messages:
            extra["messages"] = plan.messages
        if plan.raw:
            extra["raw"] = True
        if plan.fallback_reason:
            extra["fallback_reason"] = plan.fallback_reason
        if use is not None:
            extra["persona"] = use.model_dump(mode="json")
        if plan.policy:  # what a worker needs to run the same plan (distributed/celery_queue.py accepted_of)
            extra["policy"] = asdict(plan.policy)
        if plan.inputs:
            extra["inputs"] = {role: list(ref) for role, ref in plan.inputs.items()}
        if plan.identity:  # what a worker needs to measure the same face (distributed/celery_queue.py)
            extra["identity_policy"] = asdict(plan.identity)
        pending = PendingRecord(
            id=accepted.content_id,
            content_type=req.content_type,
            prompt=req.prompt,
            system=req.system,
            quality=req.quality,
            params=plan.params.model_dump(mode="json"),
            model_name=plan.model,
            extra=extra,
            owner=caller.id,
            persona_name=use.name if use else None,
            persona_version=use.version if use else None,
        )

        def accept() -> None:
            self.records.accept(pending)
            log.info("content=%s accepted type=%s model=%s", accepted.content_id, req.content_type, plan.model)

        def run(job: Job) -> ContentRecord:
            return self.execute(accepted, job)

        limited = caller.max_jobs is not None
        if limited:
            self.slots.acquire(caller)
        try:
            job = self.runner.submit(accepted.content_id, run, on_accept=accept, content_type=req.content_type)
        except BaseException:
            if limited:
                self.slots.release(caller)
            raise
        if limited:

            def release(event: dict[str, Any]) -> None:
                if event["type"] == "final":
                    self.slots.release(caller)

            job.listen(release)
        return job

    def generate(
        self,
        req: GenerateRequest,
        caller: Caller,
        emit: Emit | None = None,
        cancel: threading.Event | None = None,
        policy: TextPolicy | None = None,
    ) -> ContentRecord:
        """Submit and wait for the final record; engine events go to `emit` as they happen."""
        return self.wait(self.submit(req, caller, policy), emit, cancel)

    def wait(self, job: Job, emit: Emit | None = None, cancel: threading.Event | None = None) -> ContentRecord:
        """Wait for a job this caller submitted (its final record, or its error raised); events go to `emit`."""
        if emit is not None:
            sink = emit
            job.listen(lambda event: event["type"] != "final" and sink(event))
        while not job.done.wait(0.1):
            if cancel is not None and cancel.is_set() and not job.cancel.is_set():
                self._cancel(job.content_id)
        return job.ended()

    def cancel(self, content_id: str, caller: Caller, wait: bool = True) -> ContentRecord | None:
        """Stop queued or running work; the record ends `cancelled`, without an artifact."""
        self._visible(content_id, caller)
        return self._cancel(content_id, wait)

    def _cancel(self, content_id: str, wait: bool = True) -> ContentRecord | None:
        job = self.runner.cancel(content_id)
        if job is None:
            rec = self.records.get(content_id)
            raise Conflict(f"content {content_id} is already {rec.status}", content_id=content_id)
        if job.state == "queued":  # never started: removed from the queue
            err = Cancelled("cancelled while waiting in the queue", content_id=content_id)
            self._fail(content_id, err, time.perf_counter())
            job.finish(None, err)
        if not wait:
            return None
        job.done.wait(timeout=30)  # a running job stops between tokens
        return self.records.get(content_id)

    def execute(self, accepted: Accepted, job: Job) -> ContentRecord:
        """Run an accepted record to its end (the job runners call this: the embedded one in its job threads, a
        distributed worker for the records it took). Failures are recorded and raised."""
        try:
            return self._run(accepted, job.publish, job.cancel)
        except GenforgeError as exc:
            if isinstance(exc, Cancelled) and self.runner.closed:  # stopped by the shutdown, not by a client
                exc = Interrupted("the server stopped while this generation was running")
            exc.content_id = accepted.content_id
            self._fail(accepted.content_id, exc, accepted.started, accepted.run)
            raise exc from None
        except Exception as exc:
            log.exception("content=%s unexpected failure", accepted.content_id)
            err = GenforgeError(f"internal error: {type(exc).__name__}: {exc}", content_id=accepted.content_id)
            self._fail(accepted.content_id, err, accepted.started, accepted.run)
            raise err from exc

    def _run(self, accepted: Accepted, emit: Emit, cancel: threading.Event) -> ContentRecord:
        req, plan, content_id = accepted.request, accepted.plan, accepted.content_id
        model = self.catalog.resolve(plan.model, req.content_type)
        inputs = self._input_files(plan)
        input_refs = (
            [self._input_path(role, ref)[1] for role, (ref, _) in plan.inputs.items()]
            if plan.inputs and isinstance(plan.params, DiffusersSettings)
            else None
        )
        audio = self._audio_input(plan)
        runs: list[int] = [] if accepted.run is None else [accepted.run]

        def running() -> None:  # called once the engine has the job: the commit overlaps its first step
            values: dict[str, Any] = {"started_at": now(), "model_engine": model.engine}
            values["model_sha256"] = model.sha256 or None  # none for remote models
            if model.engine == "remote":
                base_url = redact_url(model.path)  # the record never holds the URL's password
                values["extra_model"] = {"remote": True, "base_url": base_url, "served_model": model.served_model}
            run = self.records.start(content_id, runs[0] if runs else None, values)
            if not runs:
                runs.append(run)

        job = GenerationJob(
            content_id,
            req.content_type,
            model,
            req.prompt,
            req.system,
            plan.params,
            messages=plan.messages,
            raw=plan.raw,
            fallback_reason=plan.fallback_reason,
            policy=plan.policy,
            inputs=inputs,
            limits=output_limits(req.content_type, self.settings),
            audio=audio,
        )
        job = self._image_job(job, plan)
        captions = None
        if isinstance(plan.params, VideoSettings) and plan.params.captions and isinstance(inputs, VideoInputs):
            captions, transcript_id = self._caption_words(content_id, inputs.narration_path, emit, cancel)
            job = replace(job, captions=captions)
        # `job`: after a policy retry, the one whose seed passed
        out, job = self._generate_checked(job, emit, cancel, running, plan.identity)
        if input_refs and isinstance(out.facts, ImageFacts):
            out.facts.inputs = input_refs  # the record names what it was made from (ids and sha256)
        if isinstance(job.params, SpeechSettings) and job.params.listen_back:
            out, job = self._listen_back(out, job, emit, cancel)
        if captions is not None and isinstance(out.facts, VideoFacts) and out.facts.captions is not None:
            out.facts.captions = out.facts.captions.model_copy(update={"transcript_id": transcript_id})
        signed = self.credentials.sign(  # Content Credentials; the signed file is what is stored and hashed
            content_id=content_id,
            content_type=req.content_type,
            media_type=out.media_type,
            data=out.data,
            model=model,
            params=job.params.model_dump(mode="json"),
            **self._signed_facts(out),
            checks=checks_of(out),
        )
        extra = {**signed.extra, **({"model_source": model.source} if model.source else {})}
        suffix = spec_of(req.content_type).suffix
        with self.store.guard():  # a delete of a record sharing this file waits until ours is committed
            stored = self.store.write(signed.data, out.media_type, suffix)
            try:
                result = self._retry(
                    lambda: self._succeed(accepted, runs[0], out, stored, job.params, extra), SUCCESS_COMMIT_RETRY_S
                )
            except Exception:
                if stored.created:  # ours alone: an identical artifact of another record stays
                    self.store.remove(stored.relpath)
                raise
        metrics.observe_success(result)
        log.info(
            "content=%s succeeded tokens=%s sha256=%s total_ms=%s",
            content_id,
            (out.usage or {}).get("completion_tokens"),
            stored.sha256[:12],
            result.timings.total_ms,
        )
        return result

    def _generate_checked(
        self,
        job: GenerationJob,
        emit: Emit,
        cancel: threading.Event,
        started: Callable[[], None] | None,
        identity: IdentityPolicy | None = None,
    ) -> tuple[EngineOutput, GenerationJob]:
        """Run the engine and the validator. Output that breaks the job's policy (a forbidden phrase, a character
        limit, a persona's face not measured as hers: `identity`) or its schema (params.response_format,
        params.tools) is retried with the next seed, up to GENFORGE_POLICY_ATTEMPTS runs (an identity policy's own
        `attempts`); each broken run is listed in the record's `attempts`, and the record keeps the seed that passed.
        Returns (output, the job that made it). `started` runs once, as soon as the engine has the first run (the
        engines call it; see engines/pool.py)."""
        spec = spec_of(job.content_type)
        attempts: list[dict[str, Any]] = []
        references = self._references(identity) if identity else []
        limit = (identity.attempts if identity else None) or self.settings.policy_attempts
        while True:
            out = self.engines.generate(job, emit=emit, cancel=cancel, started=started)
            started = None
            if not isinstance(out.facts, spec.facts):
                raise InvalidOutput(f"the engine reported {type(out.facts).__name__}, not {spec.facts.__name__}")
            try:
                spec.validate(out, job)
                if identity is not None and isinstance(out.facts, ImageFacts):  # the persona's face, measured
                    out.facts.identity = self.identity.measure(out.data, identity, references)
                return out, job
            except (PolicyViolation, OffSchema) as exc:  # a run that broke the policy or the schema: next seed
                seed = getattr(job.params, "seed", None)
                attempts.append({"seed": seed, "code": exc.code, "message": exc.message})
                self._retry(partial(self.records.note_attempts, job.content_id, list(attempts)), SUCCESS_COMMIT_RETRY_S)
                log.info("content=%s attempt %d broke the policy (%s)", job.content_id, len(attempts), exc.code)
                log.debug("content=%s attempt %d: %s", job.content_id, len(attempts), exc.message)  # may quote text
                if len(attempts) >= limit or seed is None:
                    exc.message = f"{exc.message} (in each of {len(attempts)} attempt(s); the last is shown)"
                    raise
                emit({"type": "retry", "attempt": len(attempts) + 1, "reason": exc.message})
                job = replace(job, params=job.params.model_copy(update={"seed": (seed + 1) % SEED_LIMIT}))

    # --- transcripts inside other runs: listen-back and captions -------------------------------------------
    def _transcribe(
        self, owner: str | None, params: dict[str, Any], prompt: str, emit: Emit, cancel: threading.Event
    ) -> tuple[ContentRecord, dict[str, Any]]:
        """A transcript record made for another record's run (listen-back, captions), owned by that record's
        owner, through the same run as any record (engine, validator, credentials, store, final commit); the
        record and its JSON. It runs in the calling job's thread, not through the queue (which may be full of
        the jobs waiting on it)."""
        req = GenerateRequest(content_type="transcript", prompt=prompt, params=params)
        plan = spec_of("transcript").plan(req, self.settings, self.catalog)
        accepted = Accepted(str(uuid.uuid4()), req, plan, time.perf_counter())
        extra: RecordExtra = {}
        if plan.inputs:
            extra["inputs"] = {role: list(ref) for role, ref in plan.inputs.items()}
        pending = PendingRecord(
            id=accepted.content_id,
            content_type="transcript",
            prompt=prompt,
            system=None,
            quality="standard",
            params=plan.params.model_dump(mode="json"),
            model_name=plan.model,
            extra=extra,
            owner=owner,
            persona_name=None,
            persona_version=None,
        )
        self._retry(partial(self.records.accept, pending), SUCCESS_COMMIT_RETRY_S)
        try:
            record = self._run(accepted, lambda event: None, cancel)
        except GenforgeError as exc:
            exc.content_id = accepted.content_id
            self._fail(accepted.content_id, exc, accepted.started)
            raise
        found = self.records.file_of(record.id)
        if found.relpath is None:
            raise ArtifactLost(f"transcript {record.id} has no file", content_id=record.id)
        doc: dict[str, Any] = json.loads(self.store.resolve(found.relpath).read_bytes())
        return record, doc

    def _listen_back(
        self, out: EngineOutput, job: GenerationJob, emit: Emit, cancel: threading.Event
    ) -> tuple[EngineOutput, GenerationJob]:
        """Listen-back: the narration is transcribed and compared with the text the voice was given (WER after
        normalising case, punctuation and numbers). Over GENFORGE_LISTEN_BACK_MAX_WER the narration is made again
        (deterministic synthesis: another rendering), up to GENFORGE_LISTEN_BACK_ATTEMPTS narrations; each one
        that failed is in the record's `attempts`; the last failure is `invalid_output` naming the WER."""
        owner = self.records.file_of(job.content_id).owner
        threshold = self.settings.listen_back_max_wer
        attempts: list[dict[str, Any]] = []
        language = voice_language(job.model.path)
        while True:
            upload = self.uploads.create_audio(out.data, ".wav", owner).id
            record, doc = self._transcribe(
                owner,
                {"upload": upload, "language": language, "word_timestamps": False},  # the words, not their times
                f"listen-back of {job.content_id}",
                emit,
                cancel,
            )
            heard = str(doc.get("text", ""))
            wer = round(word_error_rate(job.prompt, heard), 4)
            if wer <= threshold and isinstance(out.facts, SpeechFacts):
                out.facts.listen_back = ListenBack(
                    wer=wer,
                    threshold=threshold,
                    transcript_id=record.id,
                    model=record.model.name or "",
                    heard=heard,
                    attempts=len(attempts) + 1,
                )
                return out, job
            p = job.params
            seed = p.seed if isinstance(p, SpeechSettings) else None
            message = f"listen-back: the narration's word error rate is {wer:.2f}, over the threshold {threshold:.2f}"
            attempts.append(
                {"seed": seed, "code": "invalid_output", "message": message, "wer": wer, "transcript_id": record.id}
            )
            self._retry(partial(self.records.note_attempts, job.content_id, list(attempts)), SUCCESS_COMMIT_RETRY_S)
            log.info("content=%s listen-back attempt %d: WER %.2f", job.content_id, len(attempts), wer)
            if len(attempts) >= self.settings.listen_back_attempts:
                raise InvalidOutput(
                    f"{message}, in each of {len(attempts)} narration(s) (the last transcript is {record.id})",
                    hint="The voice did not say the text: try another voice or simpler wording (numbers, names), "
                    "or raise GENFORGE_LISTEN_BACK_MAX_WER.",
                    details={"wer": wer, "threshold": threshold, "transcript_id": record.id},
                )
            emit({"type": "retry", "attempt": len(attempts) + 1, "reason": message})
            next_seed = 0 if seed is None else (seed + 1) % SEED_LIMIT  # a seed: deterministic synthesis
            job = replace(job, params=job.params.model_copy(update={"seed": next_seed}))
            out, job = self._generate_checked(job, emit, cancel, None)

    def _caption_words(
        self, content_id: str, narration_path: str, emit: Emit, cancel: threading.Event
    ) -> tuple[tuple[CaptionWord, ...], str]:
        """The narration's words and their timings, from a transcript of the narration's file (a record)."""
        owner = self.records.file_of(content_id).owner
        data = Path(narration_path).read_bytes()
        upload = self.uploads.create_audio(data, ".wav", owner).id
        record, doc = self._transcribe(owner, {"upload": upload}, f"captions of {content_id}", emit, cancel)
        words = tuple(CaptionWord(str(w["word"]), float(w["start"]), float(w["end"])) for w in words_of(doc))
        if not words:
            raise InvalidOutput(
                f"captions: no words were heard in the narration (transcript {record.id})",
                hint="Make the video without captions, or with a narration that speaks.",
            )
        return words, record.id

    # --- audio inputs of transcripts -----------------------------------------------------------------------
    def _check_upload(self, plan: Plan, caller: Caller) -> None:
        """A transcript's upload must be one the caller uploaded (another key's answers like an unknown one)."""
        p = plan.params
        if isinstance(p, TranscriptSettings) and p.upload and self.uploads.find(p.upload, caller) is None:
            raise InvalidRequest(f"params.upload: {p.upload!r} is no uploaded file", field="params.upload")

    def _audio_input(self, plan: Plan) -> AudioInput | None:
        """A transcript's audio file: the stored speech record's, or the upload (the caller's: checked when the
        request was planned)."""
        p = plan.params
        if not isinstance(p, TranscriptSettings):
            return None
        if p.upload:
            upload = self.uploads.find(p.upload, LOCAL)
            if upload is None or not upload.path.is_file():
                raise ArtifactLost(f"the uploaded file {p.upload} is missing")
            return AudioInput(str(upload.path))
        ref, _ = (plan.inputs or {})["audio"]
        return AudioInput(self._input_path("audio", ref)[0])

    def _succeed(
        self,
        accepted: Accepted,
        run: int,
        out: EngineOutput,
        stored: StoredArtifact,
        params: BaseModel,
        extra: dict[str, Any],
    ) -> ContentRecord:
        """The final commit: the record turns `succeeded` with everything the engine and the store said (and the
        parameters that ran: after a policy retry, the seed that passed), while it is still this run's."""
        facts = {**out.facts.model_dump(mode="json"), **extra}
        if out.provenance:
            facts["model"] = {**self.records.file_of(accepted.content_id).extra.get("model", {}), **out.provenance}
        usage = out.usage or {}
        outcome = Outcome(
            params=params.model_dump(mode="json"),
            engine_version=out.engine_version,
            engine=out.engine,
            text=out.text,
            finish_reason=out.finish_reason,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            extra=facts,
            artifact_sha256=stored.sha256,
            artifact_size=stored.size_bytes,
            artifact_media_type=stored.media_type,
            artifact_path=stored.relpath,
            load_ms=out.load_ms,
            generate_ms=out.generate_ms,
            total_ms=elapsed_ms(accepted.started),
        )
        record = self.records.succeed(accepted.content_id, run, outcome)
        if record is None:  # cancelled, re-queued to another worker, or deleted meanwhile: this run lost it
            raise Interrupted(
                "this run no longer holds the record (it was cancelled, deleted, or given to another worker); "
                "its output was discarded"
            )
        return record

    def _check_inputs(self, plan: Plan, caller: Caller) -> None:
        """The stored inputs a plan names (a video's image and narration, an image's init image and mask) must be
        succeeded records of the right types, or for an image input an upload, that the caller may see; another
        key's record or upload answers exactly like an unknown id."""
        for role, (content_id, content_type) in (plan.inputs or {}).items():
            try:
                found: StoredFile | None = self.records.file_of(content_id)
            except NotFound:
                found = None
            if found is not None and not caller.owns(found.owner):
                found = None
            if found is None and content_type == "image" and self.uploads.find(content_id, caller) is not None:
                continue
            if found is None:
                what = "an upload or a succeeded image record" if content_type == "image" else None
                raise InvalidRequest(
                    f"params.{role}: {content_id!r} is no record, not {what or f'a succeeded {content_type} record'}",
                    field=f"params.{role}",
                )
            if found.content_type != content_type or found.status != "succeeded":
                raise InvalidRequest(
                    f"params.{role}: {content_id!r} is a {found.status} {found.content_type} record, not a succeeded "
                    f"{content_type} record",
                    field=f"params.{role}",
                )

    def _input_path(self, role: str, ref: str) -> tuple[str, ImageInputRef]:
        """(path, what the record says of it) for a stored input: a record's artifact, else an upload."""
        try:
            found: StoredFile | None = self.records.file_of(ref)
        except NotFound:
            found = None
        if found is None:
            upload = self.uploads.find(ref, LOCAL)  # the caller's own: checked when it was submitted
            if upload is None:
                raise ArtifactLost(f"the {role} {ref} no longer exists (deleted since the request was accepted)")
            if not upload.path.is_file():
                raise ArtifactLost(f"the file of the uploaded {role} {ref} is missing")
            return str(upload.path), ImageInputRef(role=role, upload_id=ref, sha256=upload.sha256)
        if found.relpath is None or found.sha256 is None:
            raise ArtifactLost(f"{role} {ref} has no file", content_id=ref)
        path = self.store.resolve(found.relpath)
        if not path.is_file():
            raise ArtifactLost(f"the file of {role} {ref} is missing", content_id=ref)
        return str(path), ImageInputRef(role=role, content_id=ref, sha256=found.sha256)

    def _input_files(self, plan: Plan) -> VideoInputs | ImageInputs | None:
        """The stored files of a plan's inputs (checked for the caller when it was submitted), and an image's
        LoRA files (their sha256 checked against what a repeated request names)."""
        if isinstance(plan.params, DiffusersSettings):
            paths = {role: self._input_path(role, ref)[0] for role, (ref, _) in (plan.inputs or {}).items()}
            loras = tuple(self._lora_file(use) for use in plan.params.loras)
            if not paths and not loras:
                return None
            return ImageInputs(init_image=paths.get("init_image"), mask=paths.get("mask"), loras=loras)
        return self._video_files(plan)

    def _video_files(self, plan: Plan) -> VideoInputs | None:
        if not plan.inputs or "image" not in plan.inputs:
            return None
        found = {role: self._input_path(role, ref)[0] for role, (ref, _) in plan.inputs.items()}
        return VideoInputs(image_path=found["image"], narration_path=found["narration"])

    @staticmethod
    def _signed_facts(out: EngineOutput) -> dict[str, Any]:
        """What an image's Content Credentials add: its inputs (ids and sha256) and its measured identity."""
        facts = out.facts
        if not isinstance(facts, ImageFacts):
            return {}
        return {
            "inputs": [i.model_dump(mode="json", exclude_none=True) for i in facts.inputs or []] or None,
            "identity": facts.identity.model_dump(mode="json") if facts.identity else None,
        }

    def _references(self, identity: IdentityPolicy) -> list[Reference]:
        """A persona's reference faces as files (records or uploads; checked when the persona was written)."""
        found = []
        for ref in identity.references:
            path, info = self._input_path("reference", ref)
            found.append(Reference(ref, info.sha256, path))
        return found

    def _lora_file(self, use: LoraUse) -> LoraFile:
        model = self.catalog.resolve(use.name, "lora")
        if model.content_type != "lora":
            raise InvalidRequest(f"params.loras: {use.name!r} is no LoRA", field="params.loras")
        if use.sha256 and use.sha256 != model.sha256:
            raise ModelUnavailable(
                f"LoRA {use.name!r} is now a file with sha256 {model.sha256[:12]}…, not the requested "
                f"{use.sha256[:12]}…",
                hint="Leave sha256 out to use the registered file, or register the file that was used.",
            )
        return LoraFile(use.name, model.path, model.sha256, use.weight)

    def _image_job(self, job: GenerationJob, plan: Plan) -> GenerationJob:
        """An image job's parameters as they will run and be recorded: each LoRA with its file's sha256."""
        p, inputs = job.params, job.inputs
        if not isinstance(p, DiffusersSettings) or not isinstance(inputs, ImageInputs) or not inputs.loras:
            return job
        loras = tuple(LoraUse(name=f.name, weight=f.weight, sha256=f.sha256) for f in inputs.loras)
        return replace(job, params=p.model_copy(update={"loras": loras}))

    def _retry(self, commit: Callable[[], T], within_s: float | None) -> T:
        """Run a database commit again while the database is unavailable (locked, full): for `within_s`
        seconds, or until it works when None (unless the service is closing, when it gives up)."""
        deadline = None if within_s is None else time.monotonic() + within_s
        delay = 0.1
        while True:
            try:
                return commit()
            except DatabaseUnavailable as exc:
                if self.closing or (deadline is not None and time.monotonic() > deadline):
                    raise
                log.warning("database unavailable (%s); retrying in %.1f s", exc.message, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _fail(self, content_id: str, err: GenforgeError, started: float, run: int | None = None) -> None:
        """Record the failure. While the database is unavailable this waits and tries again, so that no record
        stays `pending` or `running` with no job behind it; the job is not finished until it is recorded."""
        # The message may quote the request or the output (a forbidden phrase, a remote's answer): user data, in
        # the record and at DEBUG, not in the default log.
        log.warning("content=%s failed code=%s", content_id, err.code)
        log.debug("content=%s failed: %s", content_id, err.message)
        status: Status = "cancelled" if err.code == "cancelled" else "failed"

        def commit() -> None:
            if self.records.finish(content_id, status, err, run, total_ms=elapsed_ms(started)):
                metrics.observe_failure(self.records.file_of(content_id).content_type, err.code)

        try:
            self._retry(commit, None)
        except DatabaseUnavailable:
            # Only when shutting down: the record stays unfinished (never `succeeded`), and the next start's
            # recovery marks it `interrupted`. The original error still reaches the caller.
            log.exception("content=%s could not record the failure", content_id)

    # --- reading and deleting ------------------------------------------------------------------------------
    def _visible(self, content_id: str, caller: Caller) -> StoredFile:
        """The record, if the caller may see it; another key's id answers exactly like an unknown one."""
        found = self.records.file_of(content_id)
        if not caller.owns(found.owner):
            raise NotFound(f"no content with id {content_id!r}", field="id")
        return found

    def get(self, content_id: str, caller: Caller) -> ContentRecord:
        """The record, if the caller may see it (one read: the record names its owner)."""
        record = self.records.get(content_id)
        if not caller.owns(record.owner):
            raise NotFound(f"no content with id {content_id!r}", field="id")
        if record.status == "pending":
            return record.model_copy(update={"queue_position": self.runner.position(content_id)})
        return record

    def list(
        self,
        caller: Caller,
        content_type: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        *,
        q: str | None = None,
        model: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> ContentPage:
        """The records the caller may see, newest first; `q` is a full-text search over prompt and text."""
        conds = self.records.filters(caller.owner_filter, content_type, status, model, created_after, created_before)
        return self.records.page(conds, q, limit, offset)

    def artifact(self, content_id: str, caller: Caller) -> tuple[Path, str]:
        found = self._visible(content_id, caller)
        if not found.relpath:
            raise NotFound(f"content {content_id} has no file (status {found.status})", field="id")
        path = self.store.resolve(found.relpath)
        if not path.is_file():
            raise ArtifactLost(
                f"the file of content {content_id} is missing from the data directory", content_id=content_id
            )
        size = path.stat().st_size
        if size != found.size_bytes:  # cheap on every read; `genforge audit` re-hashes
            raise ArtifactChanged(
                f"the file of content {content_id} is {size} bytes, not the recorded {found.size_bytes}: it "
                "was changed outside genforge",
                content_id=content_id,
            )
        return path, found.media_type or "application/octet-stream"

    def verify(self, content_id: str, caller: Caller) -> ArtifactCheck:
        """Re-hash a record's file: intact when it exists with the recorded sha256 and size."""
        found = self._visible(content_id, caller)
        if not found.relpath or found.sha256 is None or found.size_bytes is None:
            raise Conflict(
                f"content {content_id} has no artifact to verify (status {found.status})",
                content_id=content_id,
                hint="Only succeeded records have a file.",
            )
        path = self.store.resolve(found.relpath)
        check = ArtifactCheck(
            id=content_id,
            expected_sha256=found.sha256,
            expected_size_bytes=found.size_bytes,
            intact=False,
            detail="the file is missing",
        )
        if path.is_file():
            check.sha256, check.size_bytes = sha256_file(path), path.stat().st_size
            check.intact = check.sha256 == found.sha256 and check.size_bytes == found.size_bytes
            check.detail = (
                "the file's sha256 and size are the recorded ones"
                if check.intact
                else "the file differs from the record"
            )
        return check

    def delete(self, content_id: str, caller: Caller) -> None:
        self._visible(content_id, caller)
        # The file goes under the same guard, after the commit: removed once the guard is released, it could be
        # the file a generation had just written (under the guard) and recorded as its own meanwhile.
        with self.store.guard():
            relpath = self.records.delete(content_id)
            if relpath:
                self.store.remove(relpath)
        log.info("content=%s deleted", content_id)

    def credentials_of(self, content_id: str, caller: Caller) -> dict[str, Any]:
        """The record's Content Credentials, as read back from its file now (or its text's signed sidecar)."""
        path, media_type = self.artifact(content_id, caller)
        extra = self.records.file_of(content_id).extra
        return describe(self.credentials, content_id, extra, path.read_bytes(), media_type)

    def find_by_content_hash(self, digest: str, caller: Caller) -> builtins.list[ContentRecord]:
        """Succeeded records whose decoded pixels or samples hash to `digest` (a file stripped of metadata)."""
        return [r for r in self.records.find(content_hash=digest) if caller.owns(r.owner)]

    def sidecar_of(self, content_id: str, caller: Caller) -> dict[str, Any] | None:
        try:
            found = self._visible(content_id, caller)
        except NotFound:
            return None
        sidecar: dict[str, Any] | None = found.extra.get("credentials_sidecar")
        return sidecar

    def find_by_file(self, path: Path, caller: Caller) -> tuple[str, builtins.list[ContentRecord]]:
        """(sha256 of the file, the succeeded records whose artifact it is)."""
        digest = sha256_file(path)
        return digest, [r for r in self.records.find(artifact_sha256=digest) if caller.owns(r.owner)]

    # --- stopping and recovering ----------------------------------------------------------------------------
    def shutdown(self, drain_s: float) -> None:
        """A clean stop: no new work; queued jobs end `interrupted` unrun; running ones get `drain_s` seconds
        to finish, then are stopped (between tokens or steps) and end `interrupted` too."""
        queued, left = self.runner.drain(drain_s)
        for job in queued:
            err = Interrupted("the server stopped before this generation started", content_id=job.content_id)
            self._fail(job.content_id, err, time.perf_counter())
            job.finish(None, err)
        for job in left:
            if not job.done.wait(CANCEL_WAIT_S):
                log.warning("content=%s did not stop within %.0f s of the shutdown", job.content_id, CANCEL_WAIT_S)
        self.closing = True
        if queued or left:
            log.info("shutdown: %d queued job(s) interrupted, %d running job(s) stopped", len(queued), len(left))

    def recover(self) -> dict[str, Any]:
        """After a crash: records left pending/running end `failed` (code `interrupted`), and artifact files no
        record refers to (written just before a crash, or old temp files) are removed: proven orphaned under the
        store's guard, against the references read inside it (ArtifactStore.remove_orphans), so a file a
        generation (a CLI run beside this server, say) has just written and is recording is never one."""
        stale = self.records.interrupt_unfinished()
        orphans = self.store.remove_orphans(self.records.referenced_paths)  # judged under the store's guard
        if stale or orphans:
            log.warning(
                "recovered: %d interrupted record(s) marked failed, %d orphan file(s) removed", len(stale), len(orphans)
            )
        return {"interrupted": stale, "orphans_removed": len(orphans)}


def voice_language(model_path: str) -> str | None:
    """The language of a Piper voice from its file name (en_US-joe-medium.onnx: "en"); None when it does not say
    (the transcription model then detects it)."""
    head = Path(model_path).name.split("_", 1)[0].split("-", 1)[0]
    return head.lower() if len(head) == 2 and head.isalpha() and "_" in Path(model_path).name else None


def checks_of(out: EngineOutput) -> dict[str, Any] | None:
    """What the output was verified against, for its Content Credentials: a narration's listen-back."""
    if isinstance(out.facts, SpeechFacts) and out.facts.listen_back is not None:
        lb = out.facts.listen_back
        return {"listen_back": {"wer": lb.wer, "threshold": lb.threshold, "transcript_id": lb.transcript_id}}
    return None
