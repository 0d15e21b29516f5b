"""Access control through the real app: keys, scopes, models, owners, rate and job limits, Host and Origin.

One app on the real model, with its own data dir (a key turns auth on for the whole database, so these tests
never share the session's `live` app).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from conftest import (
    CONTENT,
    DEFAULT_MODEL,
    GENERATE,
    assert_bad_input,
    assert_error,
    long_generation_body,
    make_settings,
    running_app,
    runtime_of,
    text_body,
)
from genforge.core.caller import LOCAL

pytestmark = pytest.mark.both_modes


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(make_settings(tmp_path_factory.mktemp("access"))) as client:
        yield client


def key(client, name, scope, **opts) -> tuple[str, dict]:
    info, token = client.app.state.auth.keys.create(name, scope, **opts)
    return token, info


def H(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def keys(app):
    """Auth is off until the first key exists; then every API route needs one."""
    assert app.get(CONTENT).status_code == 200
    return {
        "admin": key(app, "ops", "admin")[0],
        "writer": key(app, "app", "generate")[0],
        "other": key(app, "other-app", "generate")[0],
        "reader": key(app, "viewer", "read")[0],
    }


def test_without_a_key_the_api_is_401_but_probes_and_schema_answer(app, keys):
    for method, path in (("GET", CONTENT), ("POST", GENERATE), ("GET", "/api/v1/models"), ("GET", "/v1/models")):
        resp = app.request(method, path, json=text_body() if method == "POST" else None)
        assert resp.status_code == 401, (path, resp.text)
        assert resp.headers["www-authenticate"].startswith("Bearer")
    assert_error(app.get(CONTENT), 401, "unauthorized")
    assert app.get(CONTENT, headers=H("gf_000000000000_not-a-real-key")).status_code == 401
    assert app.get(CONTENT, headers={"Authorization": "Basic b3BzOm9wcw=="}).status_code == 401
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert app.get(path).status_code in (200, 503), path  # /readyz may be 503 while loading, never 401
    assert app.get("/metrics").status_code == 401
    assert app.get("/metrics", headers=H(keys["reader"])).status_code == 200


def test_openai_routes_answer_401_in_openai_shape(app, keys):
    resp = app.post(
        "/v1/chat/completions", json={"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "x"}]}
    )
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthorized" and resp.json()["error"]["type"]


def test_openapi_declares_the_bearer_scheme_and_the_401_403_answers(app, keys):
    doc = app.get("/openapi.json").json()
    assert any(s.get("scheme", "").lower() == "bearer" for s in doc["components"]["securitySchemes"].values())
    for path, method in (("/api/v1/content", "get"), ("/api/v1/content/generate", "post"), ("/v1/models", "get")):
        op = doc["paths"][path][method]
        assert {"401", "403", "429"} <= set(op["responses"]), (path, op["responses"].keys())
        assert op.get("security"), path
    assert "security" not in doc["paths"]["/healthz"]["get"]
    assert "OpenAIErrorBody" in str(doc["paths"]["/v1/models"]["get"]["responses"]["401"])  # OpenAI's shape there
    assert "OpenAIErrorBody" not in str(doc["paths"]["/api/v1/content"]["get"]["responses"]["401"])


def test_scopes_read_generate_admin(app, keys):
    assert_error(app.post(GENERATE, json=text_body(max_tokens=4), headers=H(keys["reader"])), 403, "forbidden")
    resp = app.post(GENERATE, json=text_body(max_tokens=4), headers=H(keys["writer"]))
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    assert rec["owner"] == app.app.state.auth.keys.lookup(keys["writer"]).id
    assert_error(app.delete(f"{CONTENT}/{rec['id']}", headers=H(keys["writer"])), 403, "forbidden")
    assert app.delete(f"{CONTENT}/{rec['id']}", headers=H(keys["admin"])).status_code == 204


def test_a_key_lists_and_reads_only_its_own_records_admin_all(app, keys):
    mine = app.post(GENERATE, json=text_body(max_tokens=4), headers=H(keys["writer"])).json()
    theirs = app.post(GENERATE, json=text_body(max_tokens=4, seed=2), headers=H(keys["other"])).json()
    listed = app.get(f"{CONTENT}?limit=500", headers=H(keys["writer"])).json()
    ids = {r["id"] for r in listed["items"]}
    assert mine["id"] in ids and theirs["id"] not in ids
    assert listed["total"] == len(ids)
    for suffix in ("", "/file", "/events"):
        assert_error(app.get(f"{CONTENT}/{theirs['id']}{suffix}", headers=H(keys["writer"])), 404, "not_found")
    assert_error(app.post(f"{CONTENT}/{theirs['id']}/cancel", headers=H(keys["writer"])), 404, "not_found")
    assert app.get(f"{CONTENT}/{mine['id']}/file", headers=H(keys["writer"])).text == mine["text"]
    everything = {r["id"] for r in app.get(f"{CONTENT}?limit=500", headers=H(keys["admin"])).json()["items"]}
    assert {mine["id"], theirs["id"]} <= everything
    assert app.get(f"{CONTENT}/{theirs['id']}", headers=H(keys["admin"])).status_code == 200


def test_a_key_limited_to_models_gets_403_for_others(app, keys):
    gemma_only = key(app, "gemma-only", "generate", models=["gemma3-270m"])[0]
    err = assert_error(app.post(GENERATE, json=text_body(max_tokens=4), headers=H(gemma_only)), 403, "forbidden")
    assert DEFAULT_MODEL in err["message"]
    chat = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    assert app.post("/v1/chat/completions", json=chat, headers=H(gemma_only)).status_code == 403
    smol_only = key(app, "smol-only", "generate", models=[DEFAULT_MODEL])[0]
    assert app.post(GENERATE, json=text_body(max_tokens=4), headers=H(smol_only)).status_code == 201


def test_rate_limit_is_429_with_retry_after(app, keys):
    slow = key(app, "slow", "read", rate="2/min")[0]
    assert [app.get(CONTENT, headers=H(slow)).status_code for _ in range(2)] == [200, 200]
    resp = app.get(CONTENT, headers=H(slow))
    err = assert_error(resp, 429, "rate_limited")
    assert 1 <= int(resp.headers["retry-after"]) <= 30, resp.headers
    assert err["retry_after"] == int(resp.headers["retry-after"])
    assert app.get(CONTENT, headers=H(keys["reader"])).status_code == 200  # other keys are not affected


def test_max_jobs_per_key(app, keys):
    one = key(app, "one-job", "generate", max_jobs=1)[0]
    first = app.post(GENERATE, json={**long_generation_body(), "mode": "async"}, headers=H(one))
    assert first.status_code == 202, first.text
    try:
        err = assert_error(app.post(GENERATE, json=text_body(max_tokens=4), headers=H(one)), 429, "too_many_jobs")
        assert "limit is 1" in err["message"]
    finally:
        cancelled = app.post(f"{CONTENT}/{first.json()['id']}/cancel", headers=H(one))  # returns once it stopped
    assert cancelled.json()["status"] == "cancelled", cancelled.text
    assert app.post(GENERATE, json=text_body(max_tokens=4), headers=H(one)).status_code == 201


def test_revocation_takes_effect_on_the_next_request(app, keys):
    token = key(app, "short-lived", "read")[0]
    assert app.get(CONTENT, headers=H(token)).status_code == 200
    app.app.state.auth.keys.revoke("short-lived")  # as `genforge keys revoke` does, from any process
    assert_error(app.get(CONTENT, headers=H(token)), 401, "unauthorized")


def test_foreign_host_is_421_loopback_and_ip_hosts_answer(app, keys):
    resp = app.get("/healthz", headers={"Host": "evil.example:8000"})
    assert_error(resp, 421, "host_not_allowed")
    resp = app.delete(f"{CONTENT}/x", headers={"Host": "rebind.attacker.test", **H(keys["admin"])})
    assert resp.status_code == 421
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "10.1.2.3", "app.localhost"):
        assert app.get("/healthz", headers={"Host": host}).status_code == 200, host


def test_cross_origin_state_changing_requests_are_refused(app, keys):
    rec = app.post(GENERATE, json=text_body(max_tokens=4), headers=H(keys["writer"])).json()
    evil = {"Origin": "http://evil.example", **H(keys["admin"])}
    assert_error(app.delete(f"{CONTENT}/{rec['id']}", headers=evil), 403, "cross_origin")
    assert_error(app.post(GENERATE, json=text_body(), headers=evil), 403, "cross_origin")
    assert app.get(f"{CONTENT}/{rec['id']}", headers=evil).status_code == 200  # reads: the browser's CORS rules
    same = {"Origin": "http://localhost", **H(keys["admin"])}
    assert app.delete(f"{CONTENT}/{rec['id']}", headers=same).status_code == 204


def test_configured_hosts_and_cors_origins(app_with):
    client = app_with(preload=False, allowed_hosts="gen.example.org", cors_origins="https://ui.example.org")
    assert client.get("/healthz", headers={"Host": "gen.example.org"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "other.example.org"}).status_code == 421
    pre = client.options(
        GENERATE,
        headers={"Origin": "https://ui.example.org", "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://ui.example.org"
    resp = client.delete(f"{CONTENT}/nope", headers={"Origin": "https://ui.example.org"})
    assert_error(resp, 404, "not_found")  # let through, and answered with CORS headers
    assert resp.headers["access-control-allow-origin"] == "https://ui.example.org"
    assert client.delete(f"{CONTENT}/nope", headers={"Origin": "https://evil.example.org"}).status_code == 403


def test_metrics_public_setting(app_with):
    client = app_with(preload=False, metrics_public=True, auth="required")
    assert client.get("/metrics").status_code == 200
    assert_error(client.get(CONTENT), 401, "unauthorized")  # required: refused even before any key exists


def test_server_wide_caps_name_the_field_and_the_limit(app_with):
    client = app_with(preload=False, max_prompt_chars=50, max_tokens=32, image_max_pixels=256 * 256)
    err = assert_bad_input(client.post(GENERATE, json=text_body("x" * 51)), "prompt")
    assert "50" in err["message"] and "GENFORGE_MAX_PROMPT_CHARS" in err["hint"]
    body = {**text_body("y" * 20), "system": "z" * 31}
    assert_bad_input(client.post(GENERATE, json=body), "prompt")
    err = assert_bad_input(client.post(GENERATE, json=text_body(max_tokens=33)), "params.max_tokens")
    assert "32" in err["message"]
    image = {"content_type": "image", "prompt": "a face", "model": "portrait", "params": {"width": 512, "height": 512}}
    err = assert_bad_input(client.post(GENERATE, json=image), "params.width")
    assert str(256 * 256) in err["message"]
    assert runtime_of(client).service.list(LOCAL).total == 0  # refused requests leave no record


def test_admin_keys_manage_keys_over_http(app, keys):
    assert_error(app.get("/api/v1/keys"), 401, "unauthorized")
    assert_error(app.get("/api/v1/keys", headers=H(keys["writer"])), 403, "forbidden")
    made = app.post("/api/v1/keys", json={"name": "remote", "scope": "read", "rate": "5/s"}, headers=H(keys["admin"]))
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert made.json()["key"]["rate"] == "5/s" and token.startswith("gf_")
    listed = app.get("/api/v1/keys", headers=H(keys["admin"]))
    assert "remote" in {k["name"] for k in listed.json()["items"]} and token not in listed.text
    assert app.get(CONTENT, headers=H(token)).status_code == 200
    bad = app.post("/api/v1/keys", json={"name": "x", "scope": "root"}, headers=H(keys["admin"]))
    assert_bad_input(bad, "scope")
    assert app.delete("/api/v1/keys/remote", headers=H(keys["admin"])).json()["revoked_at"]
    assert app.get(CONTENT, headers=H(token)).status_code == 401
    assert_error(app.delete("/api/v1/keys/remote", headers=H(keys["admin"])), 404, "not_found")
    fields = {"id", "name", "scope", "models", "rate", "max_jobs", "created_at", "revoked_at"}
    assert all(set(k) == fields for k in listed.json()["items"])  # never a token or its hash
    # RFC 3339, as the schema says: with its UTC offset also from SQLite, which stores none (db.tables.UtcDateTime)
    assert all(datetime.fromisoformat(k["created_at"]).utcoffset() == timedelta(0) for k in listed.json()["items"])


def test_the_keys_api_declares_its_answers_in_the_schema(app):
    paths = app.get("/openapi.json").json()["paths"]

    def answer(path: str, method: str, status: str) -> str:
        return paths[path][method]["responses"][status]["content"]["application/json"]["schema"]["$ref"]

    assert answer("/api/v1/keys", "get", "200").endswith("/KeyList")
    assert answer("/api/v1/keys", "post", "201").endswith("/KeyCreated")
    assert answer("/api/v1/keys/{name}", "delete", "200").endswith("/KeyInfo")
    info = app.get("/openapi.json").json()["components"]["schemas"]["KeyInfo"]
    assert info["properties"]["scope"]["enum"] == ["read", "generate", "review", "admin"]
    assert "token" not in info["properties"]


def test_keys_over_http_need_an_admin_key_even_while_auth_is_off(app_with):
    client = app_with(preload=False)
    assert_error(client.post("/api/v1/keys", json={"name": "first", "scope": "admin"}), 401, "unauthorized")
    assert client.get(CONTENT).status_code == 200  # the rest stays open until a key exists
