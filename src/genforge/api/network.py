"""Network hygiene: which Host names the server answers to, and which web origins may change anything.

DNS rebinding lets any web page the user opens reach a loopback server under the page's own host name,
so a request whose Host is not a loopback name, an IP address, the bound host or a name in
GENFORGE_ALLOWED_HOSTS is refused (421). A browser page of another origin could still send a
state-changing request (a "simple" POST needs no preflight), so POST, PUT, PATCH and DELETE whose Origin
is not the server's own are refused (403) unless the origin is in GENFORGE_CORS_ORIGINS.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from genforge.api.errors import error_response
from genforge.errors import CrossOrigin, GenforgeError, HostNotAllowed

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def host_name(host: str) -> str:
    """'Example.org:8000' -> 'example.org', '[::1]:8000' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostOriginGuard:
    def __init__(self, app, allowed_hosts: list[str], bound_host: str, cors_origins: list[str]):
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.names = LOOPBACK_NAMES | {h for h in allowed_hosts if h != "*"} | {host_name(bound_host)}
        self.cors_origins = set(cors_origins)

    def host_allowed(self, host: str) -> bool:
        name = host_name(host)
        return self.any_host or name in self.names or name.endswith(".localhost") or _is_ip(name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k: v for k, v in scope.get("headers") or [] if k in (b"host", b"origin")}
        host = headers.get(b"host", b"").decode("latin-1")
        error: GenforgeError | None = None
        if host and not self.host_allowed(host):
            error = HostNotAllowed(f"this server does not answer to the host {host_name(host)!r}")
        elif scope["method"] in STATE_CHANGING and b"origin" in headers:
            origin = headers[b"origin"].decode("latin-1").rstrip("/")
            if origin not in self.cors_origins and urlsplit(origin).netloc.lower() != host.lower():
                error = CrossOrigin(f"a {scope['method']} from the web origin {origin!r} is not allowed")
        if error is not None:
            return await error_response(error, scope.get("path", ""))(scope, receive, send)
        return await self.app(scope, receive, send)
