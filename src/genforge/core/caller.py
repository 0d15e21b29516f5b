"""Who is asking: the `Caller` every core operation takes, and what it may do.

Authorization is decided here and in the core service, on the final plan (after a persona, a post or a variant
was applied), never in a wrapper a route may forget: every ContentService, PostService and PersonaStore method
that reads, makes or changes something takes a Caller. An API key becomes a Caller (core.access.KeyStore.lookup);
the CLI and a server without keys act as `LOCAL`, the operator, who sees and may use everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from genforge.errors import Forbidden

Scope = Literal["read", "generate", "review", "admin"]
# each includes the ones before it; `review` may also approve or reject posts (platform/posts.py)
SCOPES: tuple[Scope, ...] = ("read", "generate", "review", "admin")


@dataclass(frozen=True)
class Caller:
    """An API key as a request carries it, or the local operator (`LOCAL`)."""

    id: str | None  # the key's id, recorded as the owner of what it makes; None for the local operator
    name: str
    scope: Scope
    models: tuple[str, ...] | None = None  # the models it may run; None: any
    rate: tuple[int, float] | None = None  # (requests, per seconds)
    max_jobs: int | None = None  # jobs pending or running at once

    def can(self, scope: Scope) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    @property
    def admin(self) -> bool:
        return self.scope == "admin"

    def owns(self, owner: str | None) -> bool:
        """Whether something made by `owner` (a key id, or None for the operator) is this caller's to see and
        change. Admin keys and the operator see everything; a key sees what it made."""
        return self.admin or (owner is not None and owner == self.id)

    @property
    def owner_filter(self) -> str | None:
        """The owner to list by: None (everything) for admins, else this key's id."""
        return None if self.admin else self.id

    def check_model(self, model: str | None, *, what: str = "model") -> None:
        """A model this caller's request would run must be on its allow-list (403 naming it)."""
        if self.models is None or model is None or model in self.models:
            return
        raise Forbidden(
            f"the key {self.name!r} may not use model {model!r} (it may use {', '.join(self.models)})",
            field=what,
        )

    def check_scope(self, scope: Scope, action: str) -> None:
        if not self.can(scope):
            raise Forbidden(f"the key {self.name!r} has scope {self.scope!r}; {action} needs {scope!r}")


LOCAL = Caller(id=None, name="local", scope="admin")
