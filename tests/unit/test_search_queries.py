"""The query language turned into each database's syntax: FTS5 strings and PostgreSQL tsquery lexemes, never an
operator from the user's text (the results on real databases: tests/integration/test_search_api.py)."""

from __future__ import annotations

from genforge.stores.search import fts5_query, parse_query, tsquery_text


def test_words_prefixes_and_phrases_become_tsquery_lexemes():
    assert tsquery_text(parse_query('tide pool* "sea glass"')) == (
        "('tide') & ('pool':*) & (('sea':A <-> 'glass':A) | ('sea':B <-> 'glass':B))"
    )


def test_quotes_backslashes_and_operators_stay_inside_the_lexeme():
    assert tsquery_text(parse_query("it's")) == "('it''s')"
    assert tsquery_text(parse_query("back\\slash")) == "('back\\\\slash')"
    assert tsquery_text(parse_query("a&b|!c<->d:A")) == "('a&b|!c<->d:A')"  # one word, no operators
    assert tsquery_text(parse_query("(x:*")) == "('(x:':*)"  # a prefix of the word, whatever it holds


def test_fts5_gets_the_same_terms_as_quoted_strings():
    assert fts5_query(parse_query('tide pool* "sea glass"')) == '"tide" AND "pool"* AND "sea glass"'
