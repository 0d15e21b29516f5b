"""Full-text search over the records' prompt and generated text, behind one small interface.

`search_for(db_url)` picks the implementation for the database: SQLite FTS5 today (the `content_fts`
external-content table of migration 0002, kept in step with `content` by triggers). A PostgreSQL
implementation (a tsvector GIN index and `@@ websearch_to_tsquery`) can stand behind the same
`FullTextSearch.where()` later; the API, the CLI and the UI do not change.

The query language is the same on every backend, and small: words (all must occur, case-insensitive),
`"quoted phrases"`, and `word*` for a prefix. Everything else a user types is taken literally, so plain
words always work; an unbalanced quote is a 422 naming `q`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import ColumnElement, literal_column, select, table

from genforge.errors import GenforgeError, InvalidRequest

MAX_QUERY_CHARS = 500
MAX_TERMS = 32
# A term: a "quoted phrase", or a run of anything else up to whitespace or a quote.
_TERM = re.compile(r'"([^"]*)"|([^\s"]+)')


@dataclass(frozen=True)
class Term:
    text: str
    prefix: bool = False  # `word*`: any word that starts with `text`
    phrase: bool = False  # "quoted": these words next to each other


def parse_query(q: str) -> list[Term]:
    """The user's query as terms; [] for a blank query. Raises InvalidRequest (field `q`) for what cannot be
    searched: an unbalanced quote, a query too long, or one without any letter or digit."""
    if len(q) > MAX_QUERY_CHARS:
        raise InvalidRequest(f"q: the search is longer than {MAX_QUERY_CHARS} characters", field="q")
    if not q.strip():
        return []
    if q.count('"') % 2:
        raise InvalidRequest(
            "q: the search has an unbalanced double quote",
            field="q",
            hint='Close the quote ("a phrase"), or leave quotes out to search for the words.',
        )
    terms = []
    for phrase, word in _TERM.findall(q):
        text = phrase if phrase else word
        prefix = not phrase and len(text) > 1 and text.endswith("*")
        text = text.rstrip("*") if prefix else text
        if any(ch.isalnum() for ch in text):  # punctuation alone matches nothing in any index
            terms.append(Term(text, prefix=prefix, phrase=bool(phrase)))
    if not terms:
        raise InvalidRequest(
            f"q: {q!r} has no word to search for",
            field="q",
            hint="Search for words of the prompt or of the generated text.",
        )
    if len(terms) > MAX_TERMS:
        raise InvalidRequest(f"q: at most {MAX_TERMS} words or phrases", field="q")
    return terms


class FullTextSearch(Protocol):
    def where(self, q: str) -> ColumnElement[bool] | None:
        """A filter on the `content` table matching the records found by `q`; None for a blank query."""


def fts5_query(terms: list[Term]) -> str:
    """FTS5 MATCH syntax built from terms: every term a quoted string (an FTS5 string never parses as an
    operator), so the result is always valid syntax, whatever the user typed."""
    parts = []
    for t in terms:
        quoted = '"' + t.text.replace('"', '""') + '"'
        parts.append(quoted + ("*" if t.prefix else ""))
    return " AND ".join(parts)


class SqliteFts5Search:
    """`content.rowid IN (SELECT rowid FROM content_fts WHERE content_fts MATCH :q)`."""

    def where(self, q: str) -> ColumnElement[bool] | None:
        terms = parse_query(q)
        if not terms:
            return None
        fts = table("content_fts")
        hits = select(literal_column("content_fts.rowid")).select_from(fts)
        hits = hits.where(literal_column("content_fts").op("MATCH")(fts5_query(terms)))
        return literal_column("content.rowid").in_(hits)


class SearchUnavailable(GenforgeError):
    code, status = "not_supported", 501
    hint = "Full-text search runs on SQLite today; PostgreSQL support is planned."


class NoSearch:
    """For databases without a search implementation yet: a blank query lists, any other says so."""

    def __init__(self, dialect: str):
        self.dialect = dialect

    def where(self, q: str) -> ColumnElement[bool] | None:
        if parse_query(q):
            raise SearchUnavailable(f"full-text search is not available on {self.dialect} yet", field="q")
        return None


def search_for(db_url: str) -> FullTextSearch:
    return SqliteFts5Search() if db_url.startswith("sqlite") else NoSearch(db_url.split(":", 1)[0])
