"""Full-text search over the records' prompt and generated text, behind one small interface.

`search_for(db_url)` picks the implementation for the database, behind the same `FullTextSearch.page()`:
- SQLite: FTS5 (the `content_fts` external-content table of migration 0002, kept in step with `content` by
  triggers);
- PostgreSQL: full-text search over `content.search_tsv`, a generated tsvector column with a GIN index
  (migration 0008), queried with a tsquery built from the parsed terms.
The API, the CLI and the UI are the same on both.

The query language is the same on every backend, and small: words (all must occur, case-insensitive),
`"quoted phrases"`, and `word*` for a prefix. Everything else a user types is taken literally, so plain
words always work; an unbalanced quote is a 422 naming `q`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import column, func, literal_column, select, table
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnClause, ColumnElement
from sqlalchemy.sql.selectable import Join

from genforge.errors import InvalidRequest
from genforge.stores.db.tables import ContentRow

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
    def page(
        self, s: Session, q: str, conds: list[ColumnElement[bool]], limit: int, offset: int
    ) -> tuple[int, list[ContentRow]] | None:
        """(total, one page of rows, newest first) of the records matching `q` and `conds` (filters on the
        `content` table); None for a blank query (the caller lists without search)."""


def fts5_query(terms: list[Term]) -> str:
    """FTS5 MATCH syntax built from terms: every term a quoted string (an FTS5 string never parses as an
    operator), so the result is always valid syntax, whatever the user typed."""
    parts = []
    for t in terms:
        quoted = '"' + t.text.replace('"', '""') + '"'
        parts.append(quoted + ("*" if t.prefix else ""))
    return " AND ".join(parts)


FTS = table("content_fts", column("rowid"))
CONTENT_ROWID: ColumnClause[Any] = literal_column("content.rowid")


class CrossJoin(Join):
    """`a CROSS JOIN b ON ...`: in SQLite the left table then always drives the join. Without it the planner
    may walk a filter's index and run the MATCH once per row (seconds at 100k records)."""

    inherit_cache = True


@compiles(CrossJoin)
def _cross_join(join: CrossJoin, compiler: SQLCompiler, **kw: Any) -> str:
    left_len = len(compiler.process(join.left, asfrom=True))
    sql = compiler.visit_join(join, **kw)  # "content_fts JOIN content ON ..."; also tells the linter the edge
    assert sql[left_len:].startswith(" JOIN "), sql
    return f"{sql[:left_len]} CROSS{sql[left_len:]}"


HITS = CrossJoin(FTS, ContentRow.__table__, FTS.c.rowid == CONTENT_ROWID)  # FTS5 hits, then their records


class SqliteFts5Search:
    """FTS5 over the `content_fts` external-content index. Hits come newest first by rowid (the order records
    were written, which is their created_at order): FTS5 walks its index backwards and stops after the page,
    so a word in most of 100k records costs no more than a rare one (sorting the hits by created_at instead
    costs 100 ms and more there; see docs/benchmarks.md). With filters, each hit's record is read to test them."""

    def page(
        self, s: Session, q: str, conds: list[ColumnElement[bool]], limit: int, offset: int
    ) -> tuple[int, list[ContentRow]] | None:
        terms = parse_query(q)
        if not terms:
            return None
        match = literal_column("content_fts").op("MATCH")(fts5_query(terms))
        rows = s.scalars(
            select(ContentRow)
            .select_from(HITS)
            .where(match, *conds)
            .order_by(FTS.c.rowid.desc())
            .offset(offset)
            .limit(limit)
        ).all()
        counted = select(func.count()).select_from(HITS if conds else FTS)  # no filters: the index alone counts
        total = s.execute(counted.where(match, *conds)).scalar_one()  # COUNT(*) always gives one row
        return total, list(rows)


def tsquery_text(terms: list[Term]) -> str:
    """to_tsquery syntax built from terms: every word a quoted lexeme (quotes and backslashes doubled), so the
    result is always valid syntax and no user character is ever an operator (`&`, `|`, `!`, `<->`, `:`).
    to_tsquery then normalises each lexeme with the same configuration as the documents (migration 0008).

    A word is `'w'`, a prefix `'w':*`, and a phrase `'a' <-> 'b'` within the prompt (weight A) or within the
    text (weight B), as FTS5 matches a phrase within one column."""

    def lexeme(word: str, flags: str = "") -> str:
        quoted = "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"
        return quoted + (":" + flags if flags else "")

    parts = []
    for t in terms:
        words = t.text.split() if t.phrase else [t.text]
        if len(words) == 1:
            parts.append(lexeme(words[0], "*" if t.prefix else ""))
        else:
            parts.append(" | ".join("(" + " <-> ".join(lexeme(w, weight) for w in words) + ")" for weight in "AB"))
    return " & ".join(f"({p})" for p in parts)


SEARCH_CONFIG = "genforge_search"  # 'simple' with unaccent (migration 0008)
SEARCH_TSV: ColumnClause[Any] = literal_column("content.search_tsv")


class PostgresSearch:
    """PostgreSQL full-text search over `content.search_tsv` (its GIN index finds the hits). Hits come newest
    first by created_at, the order of plain listing and of the SQLite path (there rowid, the order records were
    written); the total counts every hit under the same filters."""

    def page(
        self, s: Session, q: str, conds: list[ColumnElement[bool]], limit: int, offset: int
    ) -> tuple[int, list[ContentRow]] | None:
        terms = parse_query(q)
        if not terms:
            return None
        match = SEARCH_TSV.op("@@")(
            func.to_tsquery(literal_column(f"'{SEARCH_CONFIG}'::regconfig"), tsquery_text(terms))
        )
        rows = s.scalars(
            select(ContentRow)
            .where(match, *conds)
            .order_by(ContentRow.created_at.desc(), ContentRow.id.desc())
            .offset(offset)
            .limit(limit)
        ).all()
        total = s.execute(select(func.count()).select_from(ContentRow).where(match, *conds)).scalar_one()
        return total, list(rows)


def search_for(db_url: str) -> FullTextSearch:
    return SqliteFts5Search() if db_url.startswith("sqlite") else PostgresSearch()
