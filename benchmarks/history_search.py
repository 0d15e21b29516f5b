"""History search at scale: full-text search (SQLite FTS5, the shipped path) vs a `LIKE '%word%'` scan of the same
rows, and plain listing, through GET /api/v1/content, in one run.

A fresh data dir whose database is migrated (so the FTS5 index and its triggers exist) gets N records inserted
directly (the triggers index them as they go in). Text is drawn from a Zipf-distributed vocabulary of made-up
words, so that a query word can be rare, medium or common. Requests go through the app (FastAPI TestClient:
routing, validation, the service's query, the JSON of a page of 50 records). The LIKE reference is the same API
with the service's search swapped for a `prompt LIKE '%w%' OR text LIKE '%w%'` filter. Prints p50/p95 per query
kind and the ratio LIKE / FTS5. Goal: search p95 < 50 ms at 100k records.

    .venv/bin/python benchmarks/history_search.py [--records 100000] [--rounds 20] [--database-url URL]

With `--database-url postgresql+psycopg://...` (an empty database) the same runs on PostgreSQL: its full-text
search (the generated tsvector column and its GIN index, migration 0008) against the same LIKE scan.
"""

from __future__ import annotations

import argparse
import itertools
import random
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, or_, select

from genforge.api import create_app
from genforge.config import Settings
from genforge.stores.db import ContentRow, Database

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zen", "dor", "pel", "tam", "quo", "bri", "sha", "fen"]


def vocabulary(n: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


PARAMS = {"max_tokens": 90, "temperature": 0.6, "top_p": 0.9, "seed": 1, "stop": []}  # complete, as recorded


def fill(db: Database, n: int, rng: random.Random) -> list[str]:
    vocab = vocabulary(20_000, rng)
    weights = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(vocab))))  # Zipf: few common words
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(n):
        prompt = " ".join(rng.choices(vocab, cum_weights=weights, k=rng.randint(5, 12)))
        text = " ".join(rng.choices(vocab, cum_weights=weights, k=rng.randint(30, 90)))
        sha = uuid.uuid4().hex * 2
        rows.append(
            dict(id=str(uuid.uuid4()), content_type="text", status="succeeded", prompt=prompt, quality="standard",
                 params=PARAMS, model_name="smollm2-135m-instruct", model_engine="llama.cpp", text=text, extra={},
                 artifact_sha256=sha, artifact_size=len(text), artifact_media_type="text/plain",
                 created_at=start + timedelta(seconds=30 * i))
        )  # fmt: skip
    with db.engine.begin() as conn:  # the index is kept by the database as the rows go in (triggers, or generated)
        for chunk in range(0, n, 5000):
            conn.execute(ContentRow.__table__.insert(), rows[chunk : chunk + 5000])
    return vocab


class LikeSearch:
    """The reference: what a search without an index does (the same filters, paging and order as a list)."""

    def page(self, s, q, conds, limit, offset):
        word = f"%{q}%"
        conds = [*conds, or_(ContentRow.prompt.like(word), ContentRow.text.like(word))]
        total = s.scalar(select(func.count()).select_from(ContentRow).where(*conds))
        rows = s.scalars(
            select(ContentRow).where(*conds).order_by(ContentRow.created_at.desc()).offset(offset).limit(limit)
        )
        return total, rows.all()


def timed(client: TestClient, params: dict, rounds: int) -> tuple[float, float, int]:
    times = []
    total = 0
    for _ in range(rounds):
        t = time.perf_counter()
        resp = client.get("/api/v1/content", params=params)
        times.append((time.perf_counter() - t) * 1000)
        assert resp.status_code == 200, resp.text
        total = resp.json()["total"]
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)], total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--database-url", default="", help="an empty PostgreSQL database (default: SQLite)")
    args = ap.parse_args()
    rng = random.Random(7)
    data = Path(tempfile.mkdtemp(prefix="gf-bench-search-"))
    try:
        run(args, rng, data)
    finally:
        shutil.rmtree(data, ignore_errors=True)  # a 100k-record database is ~70 MB


def run(args, rng: random.Random, data: Path) -> None:
    settings = Settings(data_dir=data, preload=False, database_url=args.database_url)
    db = Database(settings.db_url)
    db.migrate()
    t = time.perf_counter()
    vocab = fill(db, args.records, rng)
    index = "FTS5 triggers" if db.sqlite else "generated tsvector, GIN"
    print(f"inserted {args.records} records ({index}) in {time.perf_counter() - t:.1f} s")
    if not db.sqlite:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE content")  # as autovacuum would soon: the planner's statistics
    db.dispose()
    # query words by how common they are: rank 5 (in most records), rank 300, rank 10000 (a handful)
    queries = {
        "common word": {"q": vocab[5]},
        "medium word": {"q": vocab[300]},
        "rare word": {"q": vocab[10_000]},
        "common+filter": {"q": vocab[5], "content_type": "text", "status": "succeeded"},
    }
    with TestClient(create_app(settings), base_url="http://localhost") as client:  # a loopback Host
        service = client.app.state.runtime.service
        fts = service.search
        rows = []
        for name, params in queries.items():
            service.search = fts
            f50, f95, hits = timed(client, params, args.rounds)
            service.search = LikeSearch()
            l50, l95, like_hits = timed(client, params, max(3, args.rounds // 4))
            rows.append((name, hits, like_hits, f50, f95, l50, l95))
        service.search = fts
        lists = {
            "list, newest 50": timed(client, {}, args.rounds),
            f"list, offset {args.records // 2}": timed(client, {"offset": args.records // 2}, args.rounds),
            "list, type+status filter": timed(client, {"content_type": "text", "status": "succeeded"}, args.rounds),
        }
    backend = "SQLite FTS5" if settings.db_url.startswith("sqlite") else "PostgreSQL full-text search"
    print(f"\n{backend} through GET /api/v1/content?q=, {args.records} records, page of 50 (ms)")
    print("query          hits FTS/LIKE   FTS p50    p95  LIKE p50     p95  LIKE/FTS p95")
    for name, hits, like, f50, f95, l50, l95 in rows:
        print(f"{name:<14} {hits:>7}/{like:<7} {f50:>9.1f} {f95:>6.1f} {l50:>9.1f} {l95:>7.1f} {l95 / f95:>12.1f}x")
    print("\nlisting (ms)")
    for name, (p50, p95, total) in lists.items():
        print(f"{name:<26} p50 {p50:7.1f}  p95 {p95:7.1f}  (total {total})")
    worst = max(r[4] for r in rows)
    print(f"\nsearch p95, worst query: {worst:.1f} ms (goal < 50 ms)")


if __name__ == "__main__":
    main()
