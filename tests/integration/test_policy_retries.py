"""Forbidden phrases and character limits are enforced: output that breaks the policy is retried with the next
seed, every attempt is recorded, and the record fails with policy_violation when none passes. A scripted runner
stands in for the engine: these tests prove the service's bookkeeping, not generation."""

from __future__ import annotations

from conftest import GENERATE, ScriptedRunner, engine_output

PERSONA = {"name": "ada", "text": {"system": "You are Ada.", "forbidden_phrases": ["As an AI"]}}
BODY = {"content_type": "text", "prompt": "Hi.", "params": {"max_tokens": 8, "seed": 40}, "persona": "ada"}


class SequenceRunner(ScriptedRunner):
    """Answers with the given texts in turn (the last one again when they run out), recording the seeds."""

    def __init__(self, *texts: str):
        super().__init__(tokens=())
        self.texts, self.seeds = list(texts), []

    def generate(self, job, emit=None, cancel=None, started=None):
        if started is not None:
            started()
        self.seeds.append(job.params.seed)
        text = self.texts[min(len(self.seeds), len(self.texts)) - 1]
        return engine_output(text)


def test_a_forbidden_phrase_in_every_attempt_fails_with_policy_violation(scripted_app):
    runner = SequenceRunner("As an ai, I cannot hike.")
    client = scripted_app(runner)
    assert client.post("/api/v1/personas", json=PERSONA).status_code == 201
    resp = client.post(GENERATE, json=BODY)
    assert resp.status_code == 502, resp.text
    err = resp.json()["error"]
    assert err["code"] == "policy_violation" and "'As an AI'" in err["message"] and err["phrase"] == "As an AI"
    assert runner.seeds == [40, 41, 42]  # GENFORGE_POLICY_ATTEMPTS (3), each with the next seed
    rec = client.get(f"/api/v1/content/{err['content_id']}").json()
    assert rec["status"] == "failed" and rec["error"]["code"] == "policy_violation" and rec["artifact"] is None
    assert [a["seed"] for a in rec["attempts"]] == [40, 41, 42]
    assert all("As an AI" in a["message"] for a in rec["attempts"])


def test_a_retry_that_passes_records_its_seed_and_the_attempts_before_it(scripted_app):
    runner = SequenceRunner("As an AI model, hello.", "Hello, I am Ada and I love maps.")
    client = scripted_app(runner)
    assert client.post("/api/v1/personas", json=PERSONA).status_code == 201
    rec = client.post(GENERATE, json=BODY).json()
    assert rec["status"] == "succeeded" and rec["text"] == "Hello, I am Ada and I love maps."
    assert rec["params"]["seed"] == 41  # the seed that made this text: sending the params again repeats it
    assert [(a["seed"], a["code"]) for a in rec["attempts"]] == [(40, "policy_violation")]


def test_an_x_caption_over_280_characters_is_never_cut(scripted_app):
    runner = SequenceRunner("word " * 70)  # 350 characters, every time
    client = scripted_app(runner)
    assert client.post("/api/v1/personas", json={"name": "ada"}).status_code == 201
    resp = client.post("/api/v1/posts", json={"persona": "ada", "brief": "tea", "parts": ["caption"], "platform": "x"})
    assert resp.status_code == 502, resp.text
    err = resp.json()["error"]
    assert err["code"] == "policy_violation" and err["part"] == "caption" and "limit of 280" in err["message"]
    post = client.get(f"/api/v1/posts/{err['post_id']}").json()
    assert post["status"] == "failed" and post["parts"]["caption"]["status"] == "failed"
    assert len(post["parts"]["caption"]["attempts"]) == 3
