"""The `genforge` command (Typer): `app` with every command group registered by importing its module."""

from genforge.cli import main, posts  # noqa: F401  (importing a group's module registers its commands)
from genforge.cli.common import app

__all__ = ["app"]
