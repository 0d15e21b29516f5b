"""Inputs and settings that would exhaust or break the server (issue 27, findings 8, 12 and 13), through HTTP and
the CLI: each is refused up front with a 4xx naming the field, fails visibly as `invalid_output`, or answers 409;
never a 500, never hundreds of megabytes of audio.

The only test doubles are scripted runners standing in for the engine worker where the service's own checks are
under test (output of a given size); the real engines (Piper, SmolLM2, the portrait) run everywhere else.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import threading
import zipfile
from array import array
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event, insert

from conftest import (
    CONTENT,
    GENERATE,
    ScriptedRunner,
    assert_bad_input,
    assert_error,
    count,
    failed_record,
    files_under,
    make_settings,
    run_cli,
    running_app,
    runtime_of,
)
from genforge.config import Settings
from genforge.contenttypes.request import GenerateRequest
from genforge.contenttypes.speech import SpeechSettings
from genforge.core.limits import check_limits
from genforge.engines.base import EngineOutput, SpeechFacts
from genforge.media.audio import encode_wav
from genforge.stores.db import PersonaRow
from speech_fixtures import SENTENCE, TWO_SENTENCES, needs_espeak, needs_piper

PERSONAS = "/api/v1/personas"
POSTS = "/api/v1/posts"
KEYS = "/api/v1/keys"
RATE = 22050


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(make_settings(tmp_path_factory.mktemp("sec-inputs"), preload=False)) as client:
        yield client


@pytest.fixture
def settings(app) -> Settings:
    """The running service's settings: a test lowers a limit with monkeypatch (restored after it)."""
    return runtime_of(app).service.settings


@pytest.fixture
def scripted(app, monkeypatch):
    """Put a scripted runner in the engine worker's place for one test."""

    def use(runner: ScriptedRunner) -> ScriptedRunner:
        monkeypatch.setattr(runtime_of(app).service, "engines", runner)
        return runner

    return use


def tone(seconds: float) -> bytes:
    """A real WAV: a 220 Hz tone at about -12 dBFS, mono PCM16 (what a speech engine returns)."""
    samples = array("h", (int(8000 * math.sin(2 * math.pi * 220 * i / RATE)) for i in range(int(RATE * seconds))))
    return encode_wav(samples.tobytes(), RATE)


def speech_output(seconds: float) -> EngineOutput:
    return EngineOutput(
        data=tone(seconds),
        media_type="audio/wav",
        engine_version="scripted",
        load_ms=0,
        generate_ms=5,
        facts=SpeechFacts(sample_rate=RATE, duration_s=seconds, voice="tone", sentences=1, deterministic=True),
    )


def speak(client, text: str = SENTENCE, **body):
    return client.post(GENERATE, json={"content_type": "speech", "prompt": text, **body})


def sse_events(raw: str) -> list[tuple[str, dict]]:
    return [
        (b.split("\n")[0].removeprefix("event: "), json.loads(b.split("\n")[1].removeprefix("data: ")))
        for b in raw.strip().split("\n\n")
    ]


# --- 8. speech and video that would exhaust the server ---------------------------------------------------------
@needs_espeak
def test_speech_that_could_outlast_the_limit_is_422_before_any_work(app, scripted):
    """5,000 characters of "Ok. " at speed 0.25 with 5 s between sentences could last 12,000 s (half a GB of WAV)."""
    runner = scripted(ScriptedRunner(tokens=[], output=speech_output(3.0)))
    total, files = count(app), files_under(runtime_of(app).settings.artifacts_dir)
    resp = speak(app, "Ok. " * 1250, model="espeak-ng", params={"speed": 0.25, "sentence_silence": 5})
    err = assert_bad_input(resp, "prompt")
    assert "GENFORGE_SPEECH_MAX_DURATION_S" in err["hint"] and err["limit"] == 1800
    assert runner.calls == 0, "the engine ran for a request refused at planning"
    assert count(app) == total and files_under(runtime_of(app).settings.artifacts_dir) == files


def test_ordinary_text_of_the_longest_speech_length_still_passes_planning():
    """The estimate is generous, not a refusal of normal use: 5,000 characters of prose at speed 1 plan."""
    prose = ("The keeper climbed the tower at dusk, lit the lamp, and wrote the weather in his log. " * 60)[:5000]
    check_limits(GenerateRequest(content_type="speech", prompt=prose), SpeechSettings(), Settings())  # no raise


@needs_espeak
def test_speech_output_over_the_byte_limit_fails_invalid_output(app, scripted, settings, monkeypatch):
    monkeypatch.setattr(settings, "speech_max_bytes", 100_000)
    scripted(ScriptedRunner(tokens=[], output=speech_output(5.0)))  # 220 kB of plausible speech for the text
    resp = speak(app, SENTENCE, model="espeak-ng")
    err = assert_error(resp, 502, "invalid_output")
    assert "over the limit of 100000" in err["message"] and "GENFORGE_SPEECH_MAX_BYTES" in err["hint"]
    rec = failed_record(app, resp, "invalid_output")
    assert app.get(f"{CONTENT}/{rec['id']}/file").status_code == 404


@needs_piper
def test_piper_stops_as_soon_as_its_audio_is_over_the_limit(app, settings, monkeypatch):
    """The engine itself stops (at the first sentence, not after synthesising and holding all of them)."""
    monkeypatch.setattr(settings, "speech_max_bytes", 30_000)  # about 0.7 s at 22.05 kHz
    with app.stream("POST", GENERATE, json={"content_type": "speech", "prompt": TWO_SENTENCES, "stream": True}) as r:
        assert r.status_code == 201
        events = sse_events(r.read().decode())
    kind, rec = events[-1]
    assert kind == "failed" and rec["error"]["code"] == "invalid_output", rec
    assert "bytes, over the limit of 30000" in rec["error"]["message"]
    assert not [e for e in events if e[0] == "progress" and e[1]["step"] == 2], events  # sentence 2 never spoken
    assert rec["artifact"] is None


@needs_piper
def test_a_video_whose_narration_outlasts_the_limit_is_422_before_any_work(app, settings, monkeypatch):
    pytest.importorskip("av", reason="the video extra (PyAV) is not installed: pip install 'genforge[video]'")
    narration = speak(app, TWO_SENTENCES, params={"seed": 1})
    assert narration.status_code == 201, narration.text
    image = app.post(GENERATE, json={"content_type": "image", "model": "portrait", "prompt": "a face",
                                     "params": {"seed": 3, "width": 256, "height": 256}})  # fmt: skip
    assert image.status_code == 201, image.text
    monkeypatch.setattr(settings, "video_max_duration_s", 1.0)
    before = count(app, content_type="video")
    params = {"image": image.json()["id"], "narration": narration.json()["id"], "width": 128, "height": 128}
    resp = app.post(GENERATE, json={"content_type": "video", "prompt": "a clip", "params": params})
    err = assert_bad_input(resp, "params.narration")
    assert "GENFORGE_VIDEO_MAX_DURATION_S" in err["hint"]
    assert count(app, content_type="video") == before  # no record: refused before any work


@needs_espeak
def test_openai_speech_is_streamed_from_the_file_never_read_on_the_event_loop(app, scripted, monkeypatch):
    """POST /v1/audio/speech used to read the whole WAV into memory on the event loop, stalling every client."""
    scripted(ScriptedRunner(tokens=[], output=speech_output(4.0)))
    read_on_loop: list[Path] = []
    read_bytes, artifacts = Path.read_bytes, runtime_of(app).settings.artifacts_dir.resolve()

    def spy(self: Path) -> bytes:
        try:
            asyncio.get_running_loop()  # only the event loop's thread has a running loop
            if self.resolve().is_relative_to(artifacts):
                read_on_loop.append(self)
        except RuntimeError:
            pass
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", spy)
    resp = app.post("/v1/audio/speech", json={"model": "espeak-ng", "input": SENTENCE, "voice": "default"})
    assert resp.status_code == 200, resp.text
    assert read_on_loop == [], f"read whole on the event loop: {read_on_loop}"
    rec = app.get(f"{CONTENT}/{resp.headers['x-genforge-content-id']}").json()
    assert resp.headers["content-type"] == "audio/wav"
    assert int(resp.headers["content-length"]) == len(resp.content) == rec["artifact"]["size_bytes"]


# --- 12. settings that break the server: 422 naming the field -------------------------------------------------
@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """An app with an admin key (managing keys over HTTP needs one)."""
    with running_app(make_settings(tmp_path_factory.mktemp("sec-keys"), preload=False)) as client:
        _, token = client.app.state.auth.keys.create("ops", "admin")
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rate": "1/0s"}, "rate"),  # a zero period: every request with the key was a 500 ZeroDivisionError
        ({"rate": "1/0min"}, "rate"),
        ({"rate": ""}, "rate"),
        ({"rate": "99999999999999999999/s"}, "rate"),
        ({"models": []}, "models"),  # was stored as "every model"
        ({"models": [""]}, "models"),
        ({"models": ["  "]}, "models"),
    ],
)
def test_broken_key_settings_are_422_naming_the_field(keyed, body, field):
    before = len(keyed.get(KEYS).json()["items"])
    assert_bad_input(keyed.post(KEYS, json={"name": "broken", "scope": "generate", **body}), field)
    assert len(keyed.get(KEYS).json()["items"]) == before, "a refused key was stored"


def test_a_valid_rate_still_limits_and_answers(keyed):
    resp = keyed.post(KEYS, json={"name": "slow", "scope": "read", "rate": "1/2s", "models": ["portrait"]})
    assert resp.status_code == 201, resp.text
    assert resp.json()["key"]["rate"] == "1/2s" and resp.json()["key"]["models"] == ["portrait"]
    h = {"Authorization": f"Bearer {resp.json()['token']}"}
    assert keyed.get(CONTENT, headers=h).status_code == 200
    assert keyed.get(CONTENT, headers=h).status_code == 429


@pytest.mark.parametrize(("args", "field"), [(("--models", ""), "models"), (("--rate", "1/0s"), "rate")])
def test_cli_keys_create_refuses_broken_settings(tmp_path, args, field):
    r = run_cli(tmp_path / "data", "keys", "create", "--name", "k", "--scope", "read", *args)
    assert r.returncode != 0, r.stdout + r.stderr
    assert field in r.stderr and "gf_" not in r.stdout, r.stderr
    listed = run_cli(tmp_path / "data", "keys", "list")
    assert "0 keys" in listed.stdout, listed.stdout


@pytest.mark.parametrize(
    ("name", "text", "field"),
    [
        ("empty", {"forbidden_phrases": [""]}, "text.forbidden_phrases.0"),
        ("spaces", {"forbidden_phrases": ["fine", "   "]}, "text.forbidden_phrases.1"),
        ("newline", {"forbidden_phrases": ["\t\n"]}, "text.forbidden_phrases.0"),
        ("signature", {"signature_phrases": [" "]}, "text.signature_phrases.0"),
    ],
)
def test_blank_phrases_are_422_on_create_and_on_edit(app, name, text, field):
    assert_bad_input(app.post(PERSONAS, json={"name": name, "text": text}), field)
    assert app.get(f"{PERSONAS}/{name}").status_code == 404
    assert app.post(PERSONAS, json={"name": name}).status_code == 201
    assert_bad_input(app.patch(f"{PERSONAS}/{name}", json={"text": text}), field)
    assert app.get(f"{PERSONAS}/{name}").json()["version"] == 1  # no version written


def test_a_blank_phrase_stored_before_the_check_neither_breaks_reading_nor_fails_every_text(app):
    """A persona row written by an earlier version, with an empty forbidden phrase: it still reads back, and its
    texts are judged by the phrases that mean something (the empty one matched every text)."""
    with runtime_of(app).service.db.session() as s:
        s.add(PersonaRow(name="legacy", version=1, text={"forbidden_phrases": ["", "zebra"]}, image={}, speech={},
                         created_at=datetime.now(UTC)))  # fmt: skip
    got = app.get(f"{PERSONAS}/legacy")
    assert got.status_code == 200 and got.json()["text"]["forbidden_phrases"] == ["", "zebra"]
    body = {"content_type": "text", "prompt": "Name a colour.", "persona": "legacy", "params": {"max_tokens": 8}}
    resp = app.post(GENERATE, json=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["persona"]["applied"]["policy.forbidden_phrases"] == ["zebra"]


# --- 13. races and references: 409, or a readable post --------------------------------------------------------
def _insert_first(app, table: str, row: dict):
    """Play the other request of a race: just before this request's INSERT into `table`, the same key is written
    by another connection (both requests passed the existence check)."""
    engine = runtime_of(app).service.db.engine
    fired = threading.Event()

    def race(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith(f"INSERT INTO {table}") and not fired.is_set():
            fired.set()
            with engine.begin() as other:
                other.execute(insert(PersonaRow).values(**row))

    event.listen(engine, "before_cursor_execute", race)
    return lambda: event.remove(engine, "before_cursor_execute", race)


def test_a_persona_created_twice_at_once_is_409_not_500(app):
    row = {"name": "twin", "version": 1, "text": {}, "image": {}, "speech": {}, "created_at": datetime.now(UTC)}
    stop = _insert_first(app, "personas", row)
    try:
        resp = app.post(PERSONAS, json={"name": "twin", "description": "the second one"})
    finally:
        stop()
    err = assert_error(resp, 409, "conflict")
    assert "twin" in err["message"]
    assert app.get(f"{PERSONAS}/twin").json()["description"] is None  # the first one's, unchanged


def test_concurrent_persona_creates_of_one_name_give_one_201_and_409s(app):
    barrier = threading.Barrier(6)
    answers: list[int] = []

    def create() -> None:
        barrier.wait()
        answers.append(app.post(PERSONAS, json={"name": "crowd"}).status_code)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(answers) == [201] + [409] * 5, answers


def test_a_persona_edited_twice_at_once_is_409_not_500(app):
    assert app.post(PERSONAS, json={"name": "edited"}).status_code == 201
    row = {"name": "edited", "version": 2, "text": {}, "image": {}, "speech": {}, "created_at": datetime.now(UTC)}
    stop = _insert_first(app, "personas", row)
    try:
        resp = app.patch(f"{PERSONAS}/edited", json={"description": "mine"})
    finally:
        stop()
    assert_error(resp, 409, "conflict")
    assert app.get(f"{PERSONAS}/edited").json()["version"] == 2


def test_a_post_whose_part_record_was_deleted_stays_readable(app):
    """Deleting a part's record is allowed (removing content must not depend on the posts that used it); the post
    then shows that part as `deleted`, without a record, and still exports what is left."""
    system = "You are Mira, a cheerful travel blogger. Write in the first person."
    assert app.post(PERSONAS, json={"name": "poster", "text": {"system": system}}).status_code == 201
    body = {"persona": "poster", "brief": "a sunrise hike above the clouds", "parts": ["caption"],
            "params": {"caption": {"max_tokens": 20, "temperature": 0.0}}}  # fmt: skip
    made = app.post(POSTS, json=body)
    assert made.status_code == 201, made.text
    post = made.json()
    caption_id = post["parts"]["caption"]["id"]
    assert app.delete(f"{CONTENT}/{caption_id}").status_code == 204
    got = app.get(f"{POSTS}/{post['id']}")
    assert got.status_code == 200, got.text
    assert got.json()["states"] == {"caption": "deleted"} and got.json()["parts"] == {}
    assert got.json()["status"] == "succeeded"  # how it was made does not change
    export = app.get(f"{POSTS}/{post['id']}/export")
    assert export.status_code == 200, export.text
    with zipfile.ZipFile(io.BytesIO(export.content)) as z:
        assert z.namelist() == ["manifest.json"]
        assert json.loads(z.read("manifest.json"))["post"]["states"] == {"caption": "deleted"}
