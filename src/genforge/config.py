"""Settings: one object, read from GENFORGE_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GENFORGE_", extra="ignore")

    # Everything genforge writes (database, artifacts, assembled models) lives here.
    data_dir: Path = Field(default_factory=lambda: Path.cwd() / "data")
    # Empty means SQLite in the data dir.
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8000

    default_text_model: str = "smollm2-135m-instruct"
    # llama.cpp threads; 0 means one per core.
    threads: int = 0
    context_size: int = 2048
    # The precision of llama.cpp's KV cache. f16 is llama.cpp's own default; q8_0 holds it in about half the
    # memory (100 instead of 189 MB for the default model at 4 x 2048 tokens) but changes what greedy decoding
    # picks (the packaged model's answers differ from llama.cpp's from the first tokens), so it is a choice.
    kv_cache_type: Literal["f16", "q8_0"] = "f16"
    # Text sequences decoded together in one llama.cpp context (batched decoding), and so the number
    # of jobs that run at once; more wait in the queue.
    parallel: int = 4
    # Jobs that may wait for a free slot; beyond it requests get 429 queue_full.
    queue_size: int = 32
    generation_timeout_s: float = 600.0
    # Remote models: the longest wait for the remote's next chunk before the request is generation_timeout.
    remote_timeout_s: float = 120.0
    # Remote models: the most bytes one answer may stream (decompressed), and the longest line of its stream (one
    # chunk); beyond either the request fails with engine_failed instead of filling this process's memory.
    remote_max_response_bytes: int = Field(default=16_000_000, ge=1024)
    remote_max_line_bytes: int = Field(default=1_000_000, ge=1024)
    # On SIGTERM: how long running jobs may go on before they are stopped and recorded `interrupted`.
    drain_timeout_s: float = 30.0
    max_body_bytes: int = 1_000_000
    # Preload the default text model when the server starts, so the first request is warm.
    preload: bool = True

    # Images: the largest width/height a request may ask for, the most denoising steps, and the
    # steps used when a request names none (diffusers checkpoints).
    image_max_size: int = 2048
    image_max_steps: int = 150
    image_default_steps: int = 25
    # Where diffusers runs: "auto" (CUDA when present, else CPU), "cpu" or "cuda".
    image_device: str = "auto"
    # What runs diffusers checkpoints: "openvino" (converted once, cached in the data dir), "torch", or "auto":
    # torch where diffusers runs on CUDA, else OpenVINO, falling back to torch (with a warning in the record) for
    # a checkpoint OpenVINO cannot convert. See genforge/imagebackend.py.
    image_backend: Literal["auto", "openvino", "torch"] = "auto"
    # CPU threads of the image engines (torch, OpenVINO); 0 means GENFORGE_THREADS (one per core). Two-thread
    # torch runs slow down many times over when another process keeps a core busy; 1 avoids that.
    image_threads: int = 0
    # A diffusers AutoencoderTiny directory (config.json + weights, e.g. TAESD for SD 1.x/2.x): what an image
    # request with params.decoder "tiny" decodes its latents with (about 1/18 of the SD VAE decoder's compute).
    # Empty: "tiny" is refused.
    image_tiny_decoder: str = ""

    # Text with a policy (a persona's forbidden phrases, a post's character limit) or a schema (response_format,
    # tools): how many generations, each with the next seed, may be tried before the record fails with
    # policy_violation (or invalid_output).
    policy_attempts: int = Field(default=3, ge=1, le=20)

    # Listen-back (params.listen_back): the most word error rate a narration may have against its text, and how
    # many narrations (the asked one, then deterministic synthesis) are tried before it fails invalid_output.
    listen_back_max_wer: float = Field(default=0.3, ge=0.0, le=1.0)
    listen_back_attempts: int = Field(default=2, ge=1, le=5)

    # Speech: the longest text one request may speak (longer is 422; split it into several requests).
    speech_max_chars: int = 5000
    # Speech and video: the longest audio or video one request may make, and its largest file. A speech request
    # whose text could last longer (a generous estimate from its length, speed and sentence silences) and a video
    # whose narration lasts longer are 422 before any work; output over either limit fails `invalid_output` (the
    # engines stop as soon as they are over). 30 min of Piper's 22.05 kHz audio is 79 MB.
    speech_max_duration_s: float = Field(default=1800.0, gt=0)
    speech_max_bytes: int = Field(default=100_000_000, gt=0)
    video_max_duration_s: float = Field(default=600.0, gt=0)
    video_max_bytes: int = Field(default=500_000_000, gt=0)

    # Server-wide caps on one request (each over-limit input is a 4xx naming the field and the limit).
    max_prompt_chars: int = 100_000  # prompt + system prompt (+ chat messages)
    max_tokens: int = 4096  # text: the most tokens one request may ask for (also below context_size)
    image_max_pixels: int = 2048 * 2048  # width x height
    # Uploads (POST /api/v1/uploads): the most bytes one file may have (a picture or audio to transcribe; 413
    # beyond it), and the most pixels one picture may have (checked before decoding).
    upload_max_bytes: int = Field(default=50_000_000, gt=0)
    upload_max_pixels: int = Field(default=40_000_000, gt=0)

    # Access control (see README, "Access control"). auto: keys are required as soon as one exists;
    # required: always (no key yet means every API request is refused).
    auth: Literal["auto", "required"] = "auto"
    metrics_public: bool = False  # /metrics without a key
    # Host names the server answers to besides loopback names and IP addresses (comma separated; "*" = any).
    allowed_hosts: str = ""
    # Web origins allowed to call the API from a browser (comma separated), e.g. "https://app.example.com".
    cors_origins: str = ""

    # Connection limits (api/server.py): the largest request head (431), how long a client may take to send a
    # whole request (408), how long a connection may sit idle, and the most connections at once (then 503).
    max_header_bytes: int = 65_536
    request_read_timeout_s: float = 30.0
    keep_alive_timeout_s: float = 5.0
    limit_concurrency: int = 512

    # The path prefix a reverse proxy serves genforge under (e.g. "/genforge"); the web UI uses relative URLs.
    root_path: str = ""

    # Content Credentials (C2PA) on every artifact, signed with this instance's key; "off" records that they
    # were switched off.
    credentials: Literal["on", "off"] = "on"

    # Scale-out. "embedded": this process queues and runs the jobs. "celery": this process accepts, records and
    # enqueues on the broker (Redis), and `genforge worker` processes run the jobs.
    queue: Literal["embedded", "celery"] = "embedded"
    broker_url: str = ""
    # Where artifacts are written and served from; every API and worker process must mount the same path in
    # the celery mode. Empty: DATA_DIR/artifacts.
    artifact_dir: Path | None = None
    # A worker holds a lease on each job it runs (renewed every third of this); a running job whose lease lapsed
    # lost its worker, and runs once more elsewhere or ends `interrupted`.
    worker_lease_s: float = 15.0
    # A worker's generation metrics (Prometheus, no key) on this port of HOST; 0: none. They are counted where
    # the jobs run, so an API process's /metrics cannot have them in the celery mode.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)

    # Publishing (platform/publishing.py): how often due publications and webhook deliveries are looked for, and
    # how long one network call may take before the publication fails (publish_failed).
    publish_poll_s: float = Field(default=0.5, gt=0)
    publish_timeout_s: float = Field(default=30.0, gt=0)
    # How often a published post is read back again (marked `removed` or `altered` when the network no longer
    # shows it as made); 0: never.
    recheck_interval_s: float = Field(default=86_400.0, ge=0)
    # Webhooks: loopback and private addresses are allowed (self-hosted receivers live there); link-local and
    # cloud metadata addresses never are. `public` narrows it to public addresses only.
    webhook_addresses: Literal["private", "public"] = "private"
    webhook_timeout_s: float = Field(default=10.0, gt=0)

    # The default log carries ids, counts and timings, never a prompt or a generated text (user data); failure
    # messages, which may quote them, come at DEBUG.
    log_level: str = "INFO"
    # The engine's live output (one line per chunk, the generated text itself): DEBUG shows it; off otherwise.
    engine_log_level: str = "INFO"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'genforge.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.artifact_dir or self.data_dir / "artifacts"

    @property
    def uploads_dir(self) -> Path:
        """Uploaded pictures: beside the artifacts (a shared artifact directory shares them with the workers)."""
        return self.artifacts_dir.parent / "uploads"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def allowed_host_names(self) -> list[str]:
        return [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def n_threads(self) -> int:
        return self.threads or os.cpu_count() or 1
