"""Personas, posts and variants with the real engines: SmolLM2 captions, the packaged portrait, the Piper voice,
and a real MP4 encode (PyAV), checked by decoding it again here (PyAV and the stdlib's wave, not the validator).
Captions are kept short (max_tokens 16-24) so a full post takes seconds."""

from __future__ import annotations

import hashlib
import io
import json
import wave
import zipfile

import pytest
from PIL import Image

from conftest import GENERATE, assert_error, make_settings, running_app
from genforge.platform.posts import speakable
from speech_fixtures import needs_piper

pytestmark = pytest.mark.both_modes

av = pytest.importorskip("av", reason="the video extra (PyAV) is not installed: pip install 'genforge[video]'")

POSTS = "/api/v1/posts"
PERSONAS = "/api/v1/personas"
MIRA = {
    "name": "mira",
    "display_name": "Mira",
    "description": "travel blogger",
    "text": {
        "system": "You are Mira, a cheerful travel blogger. Write in the first person.",
        "forbidden_phrases": ["as an AI"],
    },
    "image": {"model": "portrait", "seed": 4242, "width": 256, "height": 256},
    "speech": {"model": "piper-en-us-joe"},
}
SHORT = {"caption": {"max_tokens": 20, "temperature": 0.0}}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def post(client, platform="instagram", parts=("caption", "image", "narration", "video"), persona="mira", status=201):
    body = {"persona": persona, "brief": "a sunrise hike above the clouds", "parts": list(parts), "platform": platform}
    resp = client.post(POSTS, json={**body, "params": SHORT})
    assert resp.status_code == status, resp.text
    return resp.json()


def pixels(png: bytes) -> bytes:
    """The decoded RGB pixels (the PNG's provenance text differs per record: its id and prompt)."""
    return Image.open(io.BytesIO(png)).convert("RGB").tobytes()


def file_of(client, rec: dict) -> bytes:
    resp = client.get(rec["artifact"]["url"])
    assert resp.status_code == 200
    assert sha(resp.content) == rec["artifact"]["sha256"]
    return resp.content


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("posts")
    with running_app(make_settings(data, preload=False)) as client:
        assert client.post(PERSONAS, json=MIRA).status_code == 201
        yield client, data


def test_a_personas_forbidden_phrase_holds_where_the_job_runs(app):
    """The policy goes with the job: in the distributed mode a worker runs it, and still refuses the phrase."""
    client, _ = app
    params = {"max_tokens": 8, "seed": 1, "temperature": 0}
    body = {"content_type": "text", "prompt": "Name a colour.", "params": params}
    free = client.post(GENERATE, json=body)
    assert free.status_code == 201, free.text
    word = max(free.json()["text"].split(), key=len).strip(".,!?:;\"'")
    persona = {"name": "strict", "text": {"forbidden_phrases": [word]}}
    assert client.post(PERSONAS, json=persona).status_code == 201
    refused = client.post(GENERATE, json={**body, "persona": "strict"})  # greedy: every attempt says it again
    err = assert_error(refused, 502, "policy_violation")
    assert word in err["message"] or word in str(err), err


def test_persona_versions_and_the_records_that_used_them(app):
    client, _ = app
    resp = client.post(PERSONAS, json={**MIRA, "name": "tom"})
    assert resp.status_code == 201 and resp.json()["version"] == 1
    assert client.post(PERSONAS, json={**MIRA, "name": "tom"}).status_code == 409
    body = {"content_type": "text", "prompt": "Say hello.", "params": {"max_tokens": 8, "seed": 3}, "persona": "tom"}
    first = client.post(GENERATE, json=body).json()
    assert first["status"] == "succeeded"
    assert first["persona"]["name"] == "tom" and first["persona"]["version"] == 1
    assert first["system"] == MIRA["text"]["system"]  # from the persona, recorded as applied
    assert first["persona"]["applied"]["system"] == MIRA["text"]["system"]

    edited = client.patch(f"{PERSONAS}/tom", json={"text": {"system": "You are Tom, a grumpy chef."}})
    assert edited.status_code == 200 and edited.json()["version"] == 2
    assert edited.json()["text"]["forbidden_phrases"] == ["as an AI"]  # a section merges field by field
    assert client.get(f"{PERSONAS}/tom/versions/1").json()["text"]["system"] == MIRA["text"]["system"]
    assert client.get(f"{PERSONAS}/tom").json()["version"] == 2
    assert client.get(f"{PERSONAS}/tom/versions/3").status_code == 404

    second = client.post(GENERATE, json=body).json()
    assert second["persona"]["version"] == 2 and second["system"] == "You are Tom, a grumpy chef."
    assert client.get(f"/api/v1/content/{first['id']}").json()["persona"]["version"] == 1  # unchanged
    pinned = client.post(GENERATE, json={**body, "persona": "tom@1"}).json()
    assert pinned["persona"]["version"] == 1 and pinned["system"] == MIRA["text"]["system"]
    own = client.post(GENERATE, json={**body, "system": "Be brief."}).json()  # the request's field wins
    assert own["system"] == "Be brief." and "system" not in own["persona"]["applied"]

    chat = client.post(  # on /v1 a persona is a model name
        "/v1/chat/completions",
        json={"model": "persona:tom", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
    )
    assert chat.status_code == 200, chat.text
    via_v1 = client.get(f"/api/v1/content/{chat.headers['x-genforge-content-id']}").json()
    assert via_v1["persona"]["version"] == 2 and via_v1["system"] == "You are Tom, a grumpy chef."
    assert via_v1["messages"][0] == {"role": "system", "content": "You are Tom, a grumpy chef."}

    assert client.delete(f"{PERSONAS}/tom").status_code == 409
    assert client.delete(f"{PERSONAS}/tom", params={"force": "true"}).status_code == 204
    assert client.get(f"{PERSONAS}/tom").status_code == 404
    kept = client.get(f"/api/v1/content/{first['id']}").json()
    assert kept["persona"]["name"] == "tom" and kept["persona"]["version"] == 1


@needs_piper
def test_a_full_post_its_video_its_face_and_its_export(app):
    client, _ = app
    a = post(client, "instagram")
    assert a["status"] == "succeeded" and a["persona"] == {"name": "mira", "version": 1}
    assert set(a["parts"]) == {"caption", "image", "narration", "video"}
    for rec in a["parts"].values():
        assert rec["status"] == "succeeded" and rec["persona"]["name"] == "mira"
    caption = a["parts"]["caption"]["text"]
    assert caption.strip() and "as an ai" not in caption.lower()
    # the narration speaks the caption (without URLs and emoji, hashtags as their words)
    assert a["parts"]["narration"]["prompt"] == speakable(caption.strip())

    # The video, decoded here: an H.264 and an AAC stream, 1080x1920, as long as the narration WAV.
    with wave.open(io.BytesIO(file_of(client, a["parts"]["narration"]))) as w:
        narration_s = w.getnframes() / w.getframerate()
    with av.open(io.BytesIO(file_of(client, a["parts"]["video"]))) as c:
        video = next(s for s in c.streams if s.type == "video")
        audio = next(s for s in c.streams if s.type == "audio")
        assert (video.codec_context.name, audio.codec_context.name) == ("h264", "aac")
        assert (video.codec_context.width, video.codec_context.height) == (1080, 1920)
        frames = sum(1 for _ in c.decode(video=0))
        duration = c.duration / 1e6
    assert frames == a["parts"]["video"]["frames"] == round(narration_s * 30)
    assert abs(duration - narration_s) <= 0.1
    assert a["parts"]["video"]["params"]["image"] == a["parts"]["image"]["id"]

    # X: a caption within 280 characters, the same face as the Instagram post.
    b = post(client, "x", parts=("caption", "image"))
    assert set(b["parts"]) == {"caption", "image"} and len(b["parts"]["caption"]["text"]) <= 280
    assert b["parts"]["image"]["params"]["seed"] == 4242
    assert pixels(file_of(client, b["parts"]["image"])) == pixels(file_of(client, a["parts"]["image"]))

    # The export: every artifact, hashed as recorded, and a manifest with each part's record.
    resp = client.get(f"{POSTS}/{a['id']}/export")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(resp.content))
    assert sorted(z.namelist()) == ["caption.txt", "image.png", "manifest.json", "narration.wav", "video.mp4"]
    manifest = json.loads(z.read("manifest.json"))
    for name, entry in manifest["files"].items():
        record = a["parts"][entry["part"]]
        assert sha(z.read(name)) == entry["sha256"] == record["artifact"]["sha256"]
        assert entry["record"]["id"] == record["id"]
    assert z.read("caption.txt").decode() == caption
    assert client.get(f"{POSTS}/{a['id']}").json()["states"] == dict.fromkeys(a["parts"], "succeeded")
    assert client.delete(f"{PERSONAS}/mira").status_code == 409  # records refer to it


@needs_piper
def test_a_failing_narration_fails_the_post_and_keeps_the_other_parts(app):
    client, _ = app
    voiceless = {**MIRA, "name": "voiceless", "speech": {"model": "no-such-voice"}}
    assert client.post(PERSONAS, json=voiceless).status_code == 201
    resp = client.post(POSTS, json={"persona": "voiceless", "brief": "a quiet lake", "params": SHORT})
    assert resp.status_code == 404, resp.text  # the narration's error: its model is unknown
    err = resp.json()["error"]
    assert err["code"] == "not_found" and err["part"] == "narration" and "no-such-voice" in err["message"]
    got = client.get(f"{POSTS}/{err['post_id']}").json()
    assert got["status"] == "failed" and got["error"]["part"] == "narration"
    assert got["states"] == {"caption": "succeeded", "image": "succeeded", "narration": "failed", "video": "skipped"}
    for part in ("caption", "image"):
        rec = client.get(f"/api/v1/content/{got['parts'][part]['id']}").json()
        assert rec["status"] == "succeeded" and file_of(client, rec)


def test_the_same_face_after_a_restart(tmp_path):
    data = tmp_path / "restart"
    faces = []
    for _ in range(2):  # a new server process, engine worker and portrait compile each time
        with running_app(make_settings(data, preload=False)) as client:
            if not faces:
                assert client.post(PERSONAS, json=MIRA).status_code == 201
            faces.append(pixels(file_of(client, post(client, parts=("image",))["parts"]["image"])))
    assert faces[0] == faces[1]


def test_async_post_streams_each_part(app):
    client, _ = app
    body = {"persona": "mira", "brief": "a sunrise", "parts": ["caption"], "mode": "async", "params": SHORT}
    resp = client.post(POSTS, json=body)
    assert resp.status_code == 202 and resp.headers["location"] == f"{POSTS}/{resp.json()['id']}"
    with client.stream("GET", f"{resp.headers['location']}/events") as events:
        text = "".join(events.iter_text())
    names = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    assert names[-1] == "done" and "token" in names and "part" in names
    assert '"part": "caption"' in text
    assert client.get(resp.headers["location"]).json()["status"] == "succeeded"


def test_variants_have_distinct_seeds_and_each_is_reproducible(app):
    client, _ = app
    body = {"content_type": "text", "prompt": "A slogan for tea.", "params": {"max_tokens": 10, "seed": 7}}
    resp = client.post(GENERATE, json={**body, "variants": 3})
    assert resp.status_code == 201, resp.text
    batch = resp.json()
    assert [i["params"]["seed"] for i in batch["items"]] == [7, 8, 9]
    assert all(i["status"] == "succeeded" for i in batch["items"])
    assert max(i["batch_size_max"] for i in batch["items"]) >= 2  # decoded together
    again = client.get(f"/api/v1/batches/{batch['batch_id']}").json()
    assert [i["id"] for i in again["items"]] == [i["id"] for i in batch["items"]]
    one = batch["items"][1]
    alone = client.post(GENERATE, json={**body, "params": one["params"]}).json()
    assert alone["text"] == one["text"]
    drawn = client.post(GENERATE, json={**body, "params": {"max_tokens": 4}, "variants": 4}).json()
    assert len({i["params"]["seed"] for i in drawn["items"]}) == 4
    assert client.post(GENERATE, json={**body, "content_type": "speech", "variants": 2}).status_code == 422
    assert client.post(GENERATE, json={**body, "variants": 9}).status_code == 422


def test_a_video_needs_succeeded_records_of_the_right_types(app):
    client, _ = app
    text = client.post(GENERATE, json={"content_type": "text", "prompt": "Hi.", "params": {"max_tokens": 4}}).json()
    before = client.get("/api/v1/content", params={"content_type": "video"}).json()["total"]
    for params, field in (({"image": "nope", "narration": text["id"]}, "params.image"),
                          ({"image": text["id"], "narration": text["id"]}, "params.image")):  # fmt: skip
        resp = client.post(GENERATE, json={"content_type": "video", "prompt": "a clip", "params": params})
        assert resp.status_code == 422 and resp.json()["error"]["field"] == field, resp.text
    assert client.get("/api/v1/content", params={"content_type": "video"}).json()["total"] == before  # no record
