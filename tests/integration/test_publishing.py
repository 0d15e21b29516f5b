"""Review, channels, publishing with read-back and webhooks, against a real Bluesky PDS and PLC directory on
loopback (`scripts/pds.sh`, the same script the acceptance check uses), real posts (SmolLM2 captions, the
packaged portrait) and real webhook receivers that verify signatures with the `standardwebhooks` library.

Where npm or PostgreSQL is missing the PDS tests skip and say which package to install; CI installs both
(.ci/run) and runs them."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from atproto import Client as AtClient
from atproto import models
from standardwebhooks.webhooks import Webhook

from conftest import assert_error, free_port, make_settings, run_cli, running_app, wait_for

pytestmark = pytest.mark.both_modes

ROOT = Path(__file__).resolve().parents[2]
SHORT = {"caption": {"max_tokens": 40, "temperature": 0.0}}


@pytest.fixture(scope="module")
def pds(tmp_path_factory):
    """A PLC directory and a PDS with one account (its app password), for this module."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed (Debian: apt-get install npm); scripts/pds.sh installs the PDS with it")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql): the PLC directory needs it")
    where = tmp_path_factory.mktemp("pds")
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "pds.sh"), "start", str(where)], capture_output=True, text=True, timeout=1200
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    info = json.loads(run.stdout.strip().splitlines()[-1])
    yield info
    subprocess.run(["bash", str(ROOT / "scripts" / "pds.sh"), "stop", str(where)], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(make_settings(tmp_path_factory.mktemp("pub"))) as client:
        yield client


def key(client, name: str, scope: str) -> dict:
    _, token = client.app.state.auth.keys.create(name, scope)
    return {"Authorization": f"Bearer {token}"}


def make_post(client, headers: dict, brief: str, persona: str = "sea") -> dict:
    resp = client.post(
        "/api/v1/posts",
        json={
            "persona": persona,
            "brief": brief,
            "parts": ["caption", "image"],
            "platform": "bluesky",
            "params": SHORT,
        },
        headers=headers,
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


def wait_publication(client, headers: dict, pub_id: str) -> dict:
    def ended():
        pub = client.get(f"/api/v1/publications/{pub_id}", headers=headers).json()
        return pub if pub["status"] in ("published", "failed") else None

    return wait_for(ended, 120, 0.3, f"publication {pub_id} to end")


def pds_records(pds: dict, did: str) -> list[dict]:
    params = {"repo": did, "collection": "app.bsky.feed.post", "limit": 100}
    resp = httpx.get(f"{pds['url']}/xrpc/com.atproto.repo.listRecords", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()["records"]


class Receiver:
    """A webhook receiver on loopback: keeps each callback's headers and body; answers `status`."""

    def __init__(self, status: int = 204):
        self.calls: list[tuple[dict, bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self, secret: str) -> list[dict]:
        """Every callback whose signature verifies (standardwebhooks raises for one that does not)."""
        return [Webhook(secret).verify(body, headers) for headers, body in self.calls]


def test_review_publish_read_back_idempotent_and_signed(app, pds):
    owner = key(app, "maker", "generate")
    reviewer = key(app, "editor", "admin")  # a review key reviews the posts it may see: its own; admin: any
    hook = Receiver()
    resp = app.post("/api/v1/webhooks", json={"url": hook.url}, headers=owner)
    assert resp.status_code == 201, resp.text
    secret = resp.json()["secret"]
    assert secret.startswith("whsec_")
    body = {"name": "bsky", "kind": "bluesky", "url": pds["url"], "handle": pds["handle"], "password": pds["password"]}
    resp = app.post("/api/v1/channels", json=body, headers=owner)
    assert resp.status_code == 201, resp.text
    assert pds["password"] not in resp.text
    channel = resp.json()
    persona = {"name": "sea", "image": {"model": "portrait", "seed": 21, "width": 256, "height": 256}}
    assert app.post("/api/v1/personas", json=persona, headers=owner).status_code == 201

    post = make_post(app, owner, "a calm morning at the harbour")
    assert post["status"] == "succeeded" and post["review"] == "in_review"
    # not approved: no publication
    resp = app.post(f"/api/v1/posts/{post['id']}/publish", json={"channel": "bsky"}, headers=owner)
    assert_error(resp, 409, "conflict")
    # a generate key may not approve (even its own post); a review or admin key may, and the transition is
    # recorded with what the reviewer saw
    resp = app.post(f"/api/v1/posts/{post['id']}/review", json={"decision": "approved"}, headers=owner)
    assert_error(resp, 403, "forbidden")
    resp = app.post(
        f"/api/v1/posts/{post['id']}/review", json={"decision": "approved", "comment": "fine"}, headers=reviewer
    )
    assert resp.status_code == 200, resp.text
    reviewed = resp.json()
    assert reviewed["review"] == "approved"
    last = reviewed["reviews"][-1]
    assert (last["from_state"], last["to_state"], last["by"], last["comment"]) == (
        "in_review",
        "approved",
        "editor",
        "fine",
    )
    assert last["seen"]["parts"]["image"]["sha256"] == post["parts"]["image"]["artifact"]["sha256"]
    assert last["seen"]["policy"]["ok"] is True
    # approving again is not a transition
    resp = app.post(f"/api/v1/posts/{post['id']}/review", json={"decision": "approved"}, headers=reviewer)
    assert_error(resp, 409, "conflict")

    resp = app.post(f"/api/v1/posts/{post['id']}/publish", json={"channel": channel["id"]}, headers=owner)
    assert resp.status_code == 202, resp.text
    pub = wait_publication(app, owner, resp.json()["id"])
    assert pub["status"] == "published", pub
    assert pub["uri"].startswith("at://") and pub["checks"]["text"] == "equal"
    # the PDS itself has it: the caption's text, and the image's bytes (a 256 px PNG fits the blob limit as is)
    did, collection, rkey = pub["uri"][len("at://") :].split("/")
    got = httpx.get(
        f"{pds['url']}/xrpc/com.atproto.repo.getRecord", params={"repo": did, "collection": collection, "rkey": rkey}
    ).json()
    assert got["value"]["text"] == post["parts"]["caption"]["text"].strip()
    cid = got["value"]["embed"]["images"][0]["image"]["ref"]["$link"]
    blob = httpx.get(f"{pds['url']}/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": cid}).content
    assert hashlib.sha256(blob).hexdigest() == post["parts"]["image"]["artifact"]["sha256"]
    # publishing again: the same publication, one network post
    resp = app.post(f"/api/v1/posts/{post['id']}/publish", json={"channel": "bsky"}, headers=owner)
    assert resp.status_code == 200 and resp.json()["id"] == pub["id"]
    time.sleep(2)
    assert len(pds_records(pds, did)) == 1
    # another key sees neither the channel nor the publication
    other = key(app, "other", "generate")
    assert_error(app.get(f"/api/v1/channels/{channel['id']}", headers=other), 404, "not_found")
    assert_error(app.get(f"/api/v1/publications/{pub['id']}", headers=other), 404, "not_found")
    # the webhook got the review and the publication, signed
    wait_for(lambda: len(hook.calls) >= 3, 30, 0.2, "three webhook callbacks")
    types = [e["type"] for e in hook.events(secret)]
    assert {"post.succeeded", "post.reviewed", "publication.published"} <= set(types), types
    hooks = app.get("/api/v1/webhooks", headers=owner).json()
    deliveries = app.get(f"/api/v1/webhooks/{hooks[0]['id']}/deliveries", headers=owner).json()
    assert all(d["status"] == "delivered" and d["attempts"][0]["status"] == 204 for d in deliveries)
    # a re-check reads it back: still there; once deleted on the network, `removed` (and a webhook says so)
    resp = app.post(f"/api/v1/publications/{pub['id']}/recheck", headers=owner)
    assert resp.status_code == 200 and resp.json()["status"] == "published", resp.text
    assert resp.json()["checked_at"] > pub["checked_at"]
    network = AtClient(base_url=pds["url"])
    network.login(pds["handle"], pds["password"], fetch_bsky_profile=False)
    network.com.atproto.repo.delete_record(
        models.ComAtprotoRepoDeleteRecord.Data(repo=did, collection=collection, rkey=rkey)
    )
    resp = app.post(f"/api/v1/publications/{pub['id']}/recheck", headers=owner)
    assert resp.status_code == 200 and resp.json()["status"] == "removed", resp.text
    assert resp.json()["error"]["message"] == "the network no longer shows the post"
    wait_for(lambda: any(b"publication.removed" in b for _, b in hook.calls), 30, 0.2, "the removed callback")
    # the password is in no answer and not in the database file
    assert pds["password"] not in app.get("/api/v1/channels", headers=owner).text
    data_dir = app.app.state.runtime.settings.data_dir
    if app.app.state.runtime.settings.database_url == "":
        assert pds["password"].encode() not in (data_dir / "genforge.db").read_bytes()


def test_publish_at_and_a_network_that_is_down(app, pds):
    owner = key(app, "sched", "review")  # makes posts (review includes generate) and approves its own
    body = {"name": "bsky", "kind": "bluesky", "url": pds["url"], "handle": pds["handle"], "password": pds["password"]}
    assert app.post("/api/v1/channels", json=body, headers=owner).status_code == 201
    dead = {**body, "name": "dead", "url": f"http://127.0.0.1:{free_port()}"}
    assert app.post("/api/v1/channels", json=dead, headers=owner).status_code == 201
    persona = {"name": "pier", "image": {"model": "portrait", "seed": 5, "width": 256, "height": 256}}
    assert app.post("/api/v1/personas", json=persona, headers=owner).status_code == 201
    post = make_post(app, owner, "an evening on the pier", persona="pier")
    assert (
        app.post(f"/api/v1/posts/{post['id']}/review", json={"decision": "approved"}, headers=owner).status_code == 200
    )

    # a naive time is refused (a time needs its zone)
    resp = app.post(
        f"/api/v1/posts/{post['id']}/publish",
        json={"channel": "bsky", "publish_at": "2030-01-01T09:00:00"},
        headers=owner,
    )
    assert_error(resp, 422, "invalid_request")
    at = datetime.now(UTC) + timedelta(seconds=4)
    resp = app.post(
        f"/api/v1/posts/{post['id']}/publish", json={"channel": "bsky", "publish_at": at.isoformat()}, headers=owner
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "pending"
    time.sleep(2)
    assert app.get(f"/api/v1/publications/{resp.json()['id']}", headers=owner).json()["status"] == "pending"
    pub = wait_publication(app, owner, resp.json()["id"])
    assert pub["status"] == "published"
    assert datetime.fromisoformat(pub["published_at"]) >= at

    # a PDS nobody answers on: failed, with the reason and a hint; never published
    resp = app.post(f"/api/v1/posts/{post['id']}/publish", json={"channel": "dead"}, headers=owner)
    assert resp.status_code == 202, resp.text
    down = wait_publication(app, owner, resp.json()["id"])
    assert down["status"] == "failed" and down["uri"] is None
    assert down["error"]["code"] == "publish_failed" and "logging in" in down["error"]["message"]
    assert down["error"]["hint"]


def test_channel_and_webhook_input_refused(app_with):
    client = app_with()
    for url in (
        "http://169.254.169.254/latest",
        "http://metadata.google.internal/x",
        "ftp://127.0.0.1/x",
        "http://[fe80::1]/",
    ):
        assert_error(client.post("/api/v1/webhooks", json={"url": url}), 422, "invalid_request")
    body = {"name": "b", "kind": "bluesky", "url": "http://169.254.169.254", "handle": "a.test", "password": "p"}
    assert_error(client.post("/api/v1/channels", json=body), 422, "invalid_request")
    assert_error(client.post("/api/v1/channels", json={**body, "kind": "myspace"}), 422, "invalid_request")
    # an operator may narrow webhooks to public addresses only
    public = app_with(webhook_addresses="public")
    assert_error(public.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/x"}), 422, "invalid_request")
    # an unknown channel in a publish body, an unknown post
    assert_error(client.post("/api/v1/posts/nope/publish", json={"channel": "x"}), 404, "not_found")


@pytest.mark.only_in("embedded", reason="the CLI opens the data dir's SQLite database, not the distributed one")
def test_the_cli_reviews_and_publishes(app, pds):
    owner = key(app, "cli-maker", "admin")
    body = {"name": "cli", "kind": "bluesky", "url": pds["url"], "handle": pds["handle"], "password": pds["password"]}
    assert app.post("/api/v1/channels", json=body, headers=owner).status_code == 201
    persona = {"name": "dune", "image": {"model": "portrait", "seed": 9, "width": 256, "height": 256}}
    assert app.post("/api/v1/personas", json=persona, headers=owner).status_code == 201
    post = make_post(app, owner, "wind over the dunes", persona="dune")
    data_dir = app.app.state.runtime.settings.data_dir
    made = run_cli(data_dir, "publish", post["id"], "--channel", "cli")
    assert made.returncode != 0 and "approved" in made.stderr  # not approved: refused, nothing published
    made = run_cli(data_dir, "review", post["id"], "approved", "--comment", "from the shell")
    assert made.returncode == 0, made.stderr
    assert f"post {post['id']}: approved" in made.stdout
    made = run_cli(data_dir, "publish", post["id"], "--channel", "cli", "--json")
    assert made.returncode == 0, made.stderr
    uri = made.stdout.strip().splitlines()[-1].split()[-1]
    assert uri.startswith("at://"), made.stdout
    # the PDS has it, with the caption
    did, collection, rkey = uri[len("at://") :].split("/")
    got = httpx.get(
        f"{pds['url']}/xrpc/com.atproto.repo.getRecord", params={"repo": did, "collection": collection, "rkey": rkey}
    ).json()
    assert got["value"]["text"] == post["parts"]["caption"]["text"].strip()
