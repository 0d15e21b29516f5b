"""Transcripts, listen-back and captions on the real engines: Piper narrations transcribed by real faster-whisper
(whisper-base joined from its two PyPI packages into the test's data dir), through real HTTP and the official
openai SDK (its httpx client is the app's TestClient).

The one stand-in is an EngineClient that hands speech jobs to the real engine worker with their last sentence
dropped (a voice that skips a sentence): listen-back must refuse that narration.
"""

from __future__ import annotations

import io
import json
import re
import wave
import zipfile

import openai
import pytest

from conftest import CONTENT, GENERATE, make_settings, running_app, runtime_of
from genforge.contenttypes.transcript import normalise, repetition_loop, word_error_rate
from genforge.core.catalog import PACKAGED
from genforge.engines.base import GenerationJob
from genforge.platform.posts import speakable
from speech_fixtures import SENTENCE, TWO_SENTENCES, needs_piper, read_wav

pytestmark = [pytest.mark.slow, needs_piper]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("transcripts"), preload=False)
    with running_app(settings) as c:
        runtime_of(c).catalog.join_parts(PACKAGED["whisper-base"])  # what `models pull whisper-base` does after pip
        yield c


@pytest.fixture(scope="module")
def narration(client) -> tuple[dict, bytes]:
    resp = client.post(GENERATE, json={"content_type": "speech", "prompt": SENTENCE})
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    return rec, client.get(rec["artifact"]["url"]).content


def sdk(client) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://localhost/v1", api_key="unused", http_client=client)


def silence_wav(seconds: float = 2.0, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(rate * seconds))
    return buf.getvalue()


def test_whisper_base_is_installed_with_its_pinned_hash(client):
    entry = next(e for e in runtime_of(client).catalog.entries() if e.name == "whisper-base")
    assert entry.installed and entry.type == "transcript" and entry.engine == "faster-whisper"
    assert entry.sha256 == PACKAGED["whisper-base"].sha256 and "MIT" in entry.license


def test_sdk_transcribes_a_piper_narration_with_word_timings(client, narration):
    _, wav = narration
    duration = read_wav(wav)[3]
    r = sdk(client).audio.transcriptions.create(
        file=("speech.wav", wav), model="whisper-base", response_format="verbose_json", timestamp_granularities=["word"]
    )
    assert word_error_rate(SENTENCE, r.text) <= 0.2, r.text
    words = r.words or []
    assert len(words) >= 10
    assert all(b.start >= a.start for a, b in zip(words, words[1:], strict=False))
    assert all(0 <= w.start <= w.end <= duration + 0.3 for w in words)
    assert r.duration == pytest.approx(duration, abs=0.05)


def test_srt_vtt_and_text_are_well_formed(client, narration):
    _, wav = narration
    c = sdk(client)
    srt = c.audio.transcriptions.create(file=("s.wav", wav), model="whisper-1", response_format="srt")
    vtt = c.audio.transcriptions.create(file=("s.wav", wav), model="whisper-base", response_format="vtt")
    text = c.audio.transcriptions.create(file=("s.wav", wav), model="whisper-base", response_format="text")
    assert re.match(r"1\n\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d\n\S", srt), srt
    assert vtt.startswith("WEBVTT\n\n") and re.search(r"\d\d:\d\d:\d\d\.\d\d\d --> ", vtt), vtt
    assert word_error_rate(SENTENCE, text) <= 0.2, text


def test_silence_is_an_empty_transcript_that_says_so(client):
    resp = client.post(
        "/v1/audio/transcriptions",
        files={"file": ("silence.wav", silence_wav(), "audio/wav")},
        data={"model": "whisper-base", "response_format": "verbose_json"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["text"] == "" and body["genforge"]["no_speech"] is True
    rec = client.get(f"{CONTENT}/{body['genforge']['content_id']}").json()
    assert rec["status"] == "succeeded" and rec["no_speech"] is True and rec["text"] == ""
    assert any("no speech" in w for w in rec["warnings"])


def test_a_transcript_of_a_speech_record_by_id_and_its_owner(client, narration):
    rec, _ = narration
    resp = client.post(
        GENERATE, json={"content_type": "transcript", "prompt": "what was said", "params": {"audio": rec["id"]}}
    )
    assert resp.status_code == 201, resp.text
    t = resp.json()
    assert t["content_type"] == "transcript" and t["source"] == rec["id"] and t["language"] == "en"
    assert word_error_rate(SENTENCE, t["text"]) <= 0.2
    doc = json.loads(client.get(t["artifact"]["url"]).content)
    assert doc["text"] == t["text"] and doc["segments"][0]["words"]
    # searchable like any record
    found = client.get(f"{CONTENT}?q=weather&content_type=transcript").json()
    assert t["id"] in [r["id"] for r in found["items"]]


def test_listen_back_records_the_wer_and_its_transcript(client):
    resp = client.post(
        GENERATE, json={"content_type": "speech", "prompt": TWO_SENTENCES, "params": {"listen_back": True}}
    )
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    lb = rec["listen_back"]
    assert rec["params"]["listen_back"] is True and isinstance(lb["wer"], float) and lb["wer"] <= lb["threshold"]
    t = client.get(f"{CONTENT}/{lb['transcript_id']}").json()
    assert t["content_type"] == "transcript" and t["status"] == "succeeded" and t["text"] == lb["heard"]
    # the narration's Content Credentials carry the verdict
    creds = json.dumps(client.get(f"{CONTENT}/{rec['id']}/credentials").json())
    assert '"listen_back"' in creds and lb["transcript_id"] in creds


def test_a_personas_policy_turns_listen_back_on_unless_the_request_says(client):
    made = client.post("/api/v1/personas", json={"name": "careful", "speech": {"listen_back": True}})
    assert made.status_code == 201, made.text
    body = {"content_type": "speech", "prompt": SENTENCE, "persona": "careful"}
    on = client.post(GENERATE, json=body).json()
    assert on["params"]["listen_back"] is True and on["listen_back"]["wer"] <= on["listen_back"]["threshold"]
    off = client.post(GENERATE, json={**body, "params": {"listen_back": False}}).json()
    assert off["params"]["listen_back"] is False and off["listen_back"] is None


class SkipsLastSentence:
    """The real engine worker, except that speech jobs lose their last sentence: a voice that skips words."""

    def __init__(self, real):
        self.real = real

    def generate(self, job: GenerationJob, emit=None, timeout=None, cancel=None, started=None):
        if job.content_type == "speech":
            first = re.split(r"(?<=[.!?])\s+", job.prompt.strip())[0]
            job = GenerationJob(**{**job.__dict__, "prompt": first})
        return self.real.generate(job, emit=emit, timeout=timeout, cancel=cancel, started=started)

    def load(self, model, timeout=300):
        return self.real.load(model, timeout)

    def stop(self):
        self.real.stop()


def test_a_narration_that_skips_a_sentence_fails_listen_back(client):
    service = runtime_of(client).service
    real = service.engines
    service.engines = SkipsLastSentence(real)
    try:
        text = "The river runs quietly through the valley. Children play football in the park every afternoon."
        resp = client.post(GENERATE, json={"content_type": "speech", "prompt": text, "params": {"listen_back": True}})
    finally:
        service.engines = real
    assert resp.status_code == 502, resp.text  # invalid_output
    err = resp.json()["error"]
    assert err["code"] == "invalid_output" and "word error rate" in err["message"]
    rec = client.get(f"{CONTENT}/{err['content_id']}").json()
    assert rec["status"] == "failed" and len(rec["attempts"]) == 2
    assert all(a["wer"] > 0.3 and a["transcript_id"] for a in rec["attempts"])


def test_normalisation_and_loops():
    assert (
        speakable("Dawn 🌅 at the #harbour with @mira https://x.example/p?q=1 !") == "Dawn at the harbour with mira !"
    )
    assert normalise("It's 60% of 1,200 Cats!") == "it's sixty percent of one thousand two hundred cats"
    assert word_error_rate("Sixty two birds.", "62 birds") == 0.0
    assert repetition_loop("thank you thank you thank you thank you".split()) == "thank you"
    assert repetition_loop("the cat sat on the mat".split()) is None


def test_a_post_with_captions_burns_the_words_and_exports_webvtt(client):
    assert (
        client.post("/api/v1/personas", json={"name": "cap", "image": {"model": "portrait", "seed": 3}}).status_code
        == 201
    )
    resp = client.post(
        "/api/v1/posts",
        json={
            "persona": "cap",
            "brief": "a quiet harbour at dawn",
            "parts": ["caption", "image", "narration", "video"],
            "platform": "instagram",
            "captions": True,
        },
    )
    assert resp.status_code == 201, resp.text
    post = resp.json()
    assert post["status"] == "succeeded", post["error"]
    video, narration = post["parts"]["video"], post["parts"]["narration"]
    assert narration["listen_back"]["wer"] <= narration["listen_back"]["threshold"]
    caps = video["captions"]
    assert caps["words"] > 0 and caps["font"].endswith("DejaVuSans-Bold.ttf")
    transcript = json.loads(client.get(f"{CONTENT}/{caps['transcript_id']}/file").content)
    words = [w for s in transcript["segments"] for w in s["words"]]
    assert len(words) == caps["words"]
    export = zipfile.ZipFile(io.BytesIO(client.get(f"/api/v1/posts/{post['id']}/export").content))
    vtt = export.read("video.vtt").decode()
    assert vtt.startswith("WEBVTT") and "video.vtt" in json.loads(export.read("manifest.json"))["files"]
    frames_show_words(client.get(video["artifact"]["url"]).content, words)


def frames_show_words(mp4: bytes, words: list[dict]) -> None:
    """Decoded frames at a word's time have the caption box (bright text pixels over a dark box) in the safe
    area, and a frame between the narration's end and the video's end past the last word has none."""
    import av
    import numpy as np

    def frame_at(t: float):
        with av.open(io.BytesIO(mp4)) as c:
            s = c.streams.video[0]
            for f in c.decode(s):
                if f.time is not None and f.time >= t:
                    return f.to_ndarray(format="rgb24")
        raise AssertionError(f"no frame at {t}")

    w = words[len(words) // 2]
    frame = frame_at((w["start"] + w["end"]) / 2)
    h = frame.shape[0]
    band = frame[int(h * 0.6) : int(h * 0.76)]  # the caption's band in a vertical video's safe area
    white = (band.min(axis=2) > 235).sum()
    dark = (band.max(axis=2) < 60).sum()
    assert white > 500 and dark > 2000, (white, dark)
    outside = frame[int(h * 0.05) : int(h * 0.15)]
    assert (outside.min(axis=2) > 235).sum() < white, "the caption is drawn where it should not be"
    assert np.asarray(frame).dtype == np.uint8


def test_another_keys_speech_answers_like_an_unknown_id(client, narration):
    """Last in this file: once a key exists the server asks every request for one."""
    rec, _ = narration
    _, token = client.app.state.auth.keys.create("eve", "generate")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"content_type": "transcript", "prompt": "x", "params": {"audio": rec["id"]}}
    theirs = client.post(GENERATE, json=body, headers=headers)
    unknown = client.post(GENERATE, json={**body, "params": {"audio": "no-such-id"}}, headers=headers)
    assert theirs.status_code == unknown.status_code == 422
    assert theirs.json()["error"]["field"] == unknown.json()["error"]["field"] == "params.audio"
    # an upload is its key's: another key naming it gets the answer an unknown upload gets
    up = client.post("/api/v1/uploads", files={"file": ("quiet.wav", silence_wav(1.0), "audio/wav")}, headers=headers)
    assert up.status_code == 201, up.text
    mine = {"content_type": "transcript", "prompt": "x", "params": {"upload": up.json()["id"]}}
    made = client.post(GENERATE, json=mine, headers=headers)
    assert made.status_code == 201 and made.json()["no_speech"] is True, made.text
    _, other = client.app.state.auth.keys.create("mal", "generate")
    stolen = client.post(GENERATE, json=mine, headers={"Authorization": f"Bearer {other}"})
    assert stolen.status_code == 422 and stolen.json()["error"]["field"] == "params.upload", stolen.text
    bad = client.post("/api/v1/uploads", files={"file": ("notes.txt", b"hello", "text/plain")}, headers=headers)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "file"
