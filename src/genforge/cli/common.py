"""The `genforge` command line's shared parts: the Typer app and its groups, the consoles, and how a typed error
becomes a message and an exit status. Each command group registers itself on `app` in its own module."""

from __future__ import annotations

from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from genforge.config import Settings
from genforge.errors import GenforgeError
from genforge.runtime import Runtime, setup_logging

app = typer.Typer(help="genforge: real content from local models, with its provenance.", no_args_is_help=True)
generate_app = typer.Typer(help="Generate content and store it with its record.", no_args_is_help=True)
content_app = typer.Typer(help="Stored content and its records.", no_args_is_help=True)
models_app = typer.Typer(help="The model catalog: packaged and user-added models.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: who may use the HTTP API (see README, 'Access control').", no_args_is_help=True)
app.add_typer(generate_app, name="generate")
app.add_typer(keys_app, name="keys")
app.add_typer(content_app, name="content")
credentials_app = typer.Typer(help="Content Credentials: this instance's signing CA.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(credentials_app, name="credentials")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


# Exit statuses: 2 for what the user asked wrongly (fix the command), 1 for everything that failed while running.
USAGE_ERRORS = {"invalid_request", "not_found", "payload_too_large", "method_not_allowed", "unsupported_media_type"}


def exit_code(exc: GenforgeError) -> int:
    return 2 if exc.code in USAGE_ERRORS else 1


def fail(exc: GenforgeError) -> typer.Exit:
    err.print(f"[bold red]error[/] {escape(f'[{exc.code}] {exc.message}')}")
    if exc.hint:
        err.print(f"[yellow]hint:[/] {escape(exc.hint)}")
    if exc.content_id:
        err.print(f"content id: {exc.content_id} (recorded as failed)")
    return typer.Exit(exit_code(exc))


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
