"""Credentials out of every URL genforge prints, logs or returns (broker, database, remote model base URLs).

A URL's password (`redis://:PASSWORD@host/0`, `postgresql://user:PASSWORD@host/db`, `http://user:PASSWORD@host`)
and the values of query parameters that name a secret (`?api_key=...`, `?token=...`) become `***`; the rest (the
scheme, user, host, port, path) stays, so a message still says which server it means. `redact_text` does the same
to every URL inside a longer text (an exception's message that quotes its connection URL).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters whose values are secrets (compared lower-case, with '-' read as '_').
SECRET_PARAMS = {
    "api_key",
    "apikey",
    "key",
    "token",
    "access_token",
    "secret",
    "password",
    "passwd",
    "sig",
    "signature",
}
# A URL with an authority inside a text: scheme://, then up to the next whitespace or quote.
URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """The URL with its password and secret query values masked; a text that does not parse is masked whole
    after its scheme (it may still hold a password)."""
    try:
        parts = urlsplit(url)
        password, query = parts.password, parts.query
        netloc = parts.netloc
    except ValueError:  # e.g. a port that is not a number: keep only what cannot be secret
        scheme = url.split("://", 1)[0] if "://" in url else ""
        return f"{scheme}://{MASK}" if scheme else MASK
    if password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}"
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret(name) for name, _ in pairs):
            query = urlencode([(name, MASK if _secret(name) else value) for name, value in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (see redact_url)."""
    return URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def _secret(name: str) -> bool:
    return name.lower().replace("-", "_") in SECRET_PARAMS
