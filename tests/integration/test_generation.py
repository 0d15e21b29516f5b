"""The original checklist, made real: the packaged GGUF generates real text through HTTP, stored and hashed.

All generation here runs SmolLM2-135M through llama.cpp in the engine worker of the session's app.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import llama_cpp
import pytest

from conftest import (
    CONTENT,
    DEFAULT_MODEL,
    GENERATE,
    LONG_PROMPT,
    assert_succeeded_text,
    files_under,
    make_settings,
    open_catalog,
    packaged_model_path,
    sha256,
    text_body,
)
from genforge.contenttypes.text import TextSettings
from genforge.core.catalog import PACKAGED
from genforge.engines import create_engine
from genforge.engines.base import Done, Failed, GenerationJob
from genforge.engines.llama import LlamaEngine

pytestmark = pytest.mark.both_modes


@pytest.fixture(scope="module")
def answer(live) -> dict:
    """One real generation, shared by the checklist tests below."""
    return live.generate(
        prompt="What is the capital of France? Answer in one word.", max_tokens=12, seed=7, temperature=0
    )


def test_engine_loads_the_packaged_gguf(live):
    model = live.runtime.catalog.resolve(DEFAULT_MODEL)
    engine = create_engine("llama.cpp", live.settings)  # in this process, outside the worker
    assert engine.load(model) > 0
    assert engine.load(model) == 0.0, "a loaded model is kept warm"


def test_generation_through_http_is_real_text_with_a_complete_record(answer):
    assert_succeeded_text(answer)
    assert answer["prompt"] == "What is the capital of France? Answer in one word."
    assert answer["quality"] == "standard"
    assert answer["model"] == {
        "name": DEFAULT_MODEL,
        "engine": "llama.cpp",
        "engine_version": llama_cpp.__version__,
        "file_sha256": PACKAGED[DEFAULT_MODEL].sha256,
        "remote": False,  # a local file: no remote server, base URL or fingerprint
        "base_url": None,
        "served_model": None,
        "system_fingerprint": None,
        "source": None,  # a packaged model, not pulled from a hub
    }
    assert answer["params"]["seed"] == 7 and answer["params"]["max_tokens"] == 12
    assert answer["params"]["temperature"] == 0
    assert 0 < answer["usage"]["completion_tokens"] <= 12
    # A 135M model that answers this question has run for real: no template or placeholder knows it.
    assert "paris" in answer["text"].lower(), answer["text"]


def test_the_stored_record_is_the_one_returned(live, answer):
    got = live.client.get(f"{CONTENT}/{answer['id']}")
    assert got.status_code == 200
    assert got.json() == answer


def test_the_artifact_is_the_text_and_hashes_to_the_recorded_sha256(live, answer):
    resp = live.client.get(answer["artifact"]["url"])
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.content == answer["text"].encode("utf-8")
    assert sha256(resp.content) == answer["artifact"]["sha256"]
    assert len(resp.content) == answer["artifact"]["size_bytes"]

    on_disk = [p for p in files_under(live.settings.artifacts_dir) if p.stem == answer["artifact"]["sha256"]]
    assert len(on_disk) == 1 and on_disk[0].read_bytes() == resp.content


def test_same_seed_and_temperature_give_the_same_text(live):
    first = live.generate(prompt="Invent a name for a small red boat.", max_tokens=24, seed=1234, temperature=0.9)
    second = live.generate(prompt="Invent a name for a small red boat.", max_tokens=24, seed=1234, temperature=0.9)
    assert_succeeded_text(first)
    assert first["id"] != second["id"]
    assert second["text"] == first["text"]
    assert second["artifact"]["sha256"] == first["artifact"]["sha256"]


def test_same_seed_gives_the_same_text_when_batched_with_other_requests(live):
    """Records promise reproducibility: a seed replays alone or decoded in one batch with others."""
    body = text_body("Invent a name for a small red boat.", max_tokens=16, seed=1234, temperature=0.9)
    others = [
        text_body(f"Write a poem about the number {i}.", max_tokens=16, seed=i, temperature=0.9) for i in range(3)
    ]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(live.client.post, GENERATE, json=b) for b in (others[0], body, *others[1:])]
        responses = [f.result() for f in futures]
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    alone = live.generate(prompt=body["prompt"], **body["params"])
    assert responses[1].json()["text"] == alone["text"]


def test_greedy_text_is_what_llama_cpp_python_itself_generates(live):
    """Temperature 0 takes the argmax of the logits in place; it must pick what llama.cpp's greedy sampler,
    called through llama-cpp-python's own chat completion, picks for the same model and chat."""
    prompt = "Write a short story about a lighthouse keeper who finds a map."
    rec = live.generate(prompt=prompt, max_tokens=48, temperature=0)
    assert_succeeded_text(rec)
    llm = llama_cpp.Llama(model_path=str(packaged_model_path()), n_ctx=512, verbose=False)
    direct = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], max_tokens=48, temperature=0)
    assert rec["text"] == direct["choices"][0]["message"]["content"]


def test_max_tokens_cuts_the_answer_with_finish_reason_length(live):
    rec = live.generate(prompt="Write a long story about a dragon who learns to sail.", max_tokens=8, seed=3)
    assert_succeeded_text(rec)
    assert rec["finish_reason"] == "length"
    assert rec["usage"]["completion_tokens"] == 8


def test_a_prompt_of_hundreds_of_tokens_generates(live):
    """Multi-token prompt evaluation is where a llama.cpp build with broken AMX kernels crashes."""
    rec = live.generate(prompt=LONG_PROMPT, max_tokens=24, seed=5)
    assert_succeeded_text(rec)
    assert rec["usage"]["prompt_tokens"] >= 300


def test_system_prompt_and_quality_are_recorded(live):
    resp = live.client.post(
        GENERATE,
        json={
            **text_body("Greet a sailor.", max_tokens=12),
            "quality": "draft",
            "system": "You are a cheerful pirate.",
        },
    )
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    assert_succeeded_text(rec)
    assert rec["quality"] == "draft"
    assert rec["system"] == "You are a cheerful pirate."
    assert rec["params"]["temperature"] == 0.8  # the draft preset; max_tokens given by the request
    assert rec["params"]["max_tokens"] == 12


def test_the_kv_cache_precision_is_a_setting_and_in_the_record(live, app_with):
    """f16 (llama.cpp's default) unless GENFORGE_KV_CACHE_TYPE says q8_0 (half the memory, other greedy picks)."""
    assert live.generate(prompt="Name a colour.", max_tokens=6)["kv_cache_type"] == "f16"
    client = app_with(kv_cache_type="q8_0", preload=False)
    resp = client.post(GENERATE, json=text_body("Name a colour.", max_tokens=6))
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    assert_succeeded_text(rec)
    assert rec["kv_cache_type"] == "q8_0"


def _engine_texts(engine, jobs) -> dict[str, str]:
    for job in jobs:
        engine.submit(job)
    texts = {}
    while engine.busy:
        for ev in engine.step():
            assert not isinstance(ev, Failed), ev
            if isinstance(ev, Done):
                texts[ev.job_id] = ev.output.text
    return texts


def test_the_zeroed_kv_cache_is_given_back_and_the_text_is_the_same(tmp_path, monkeypatch):
    """llama.cpp zeroes the whole KV cache when it makes a context; genforge gives those pages back (pages.py), so
    they cost memory only once sequences reach them. Greedy text is the same as from a context that keeps them."""
    model = open_catalog(make_settings(tmp_path)).resolve(DEFAULT_MODEL)
    jobs = [
        GenerationJob(
            f"j{i}",
            "text",
            model,
            f"Write a story about {name}.",
            None,
            TextSettings(max_tokens=40, temperature=0, top_p=0.9, seed=7),
        )
        for i, name in enumerate(["a fox", "a lamp", "a ship", "a cloud"])
    ]
    released = LlamaEngine(n_threads=2, n_ctx=2048, n_parallel=4)
    released.load(model)
    m = released._llm.model
    head_dim = llama_cpp.llama_model_n_embd(m) // llama_cpp.llama_model_n_head(m)
    kv_bytes = 2 * llama_cpp.llama_model_n_layer(m) * 4 * 2048 * head_dim * llama_cpp.llama_model_n_head_kv(m) * 2
    assert released.released_bytes >= kv_bytes  # K and V in f16 for 4 x 2048 cells, at least
    texts = _engine_texts(released, jobs)
    kept = LlamaEngine(n_threads=2, n_ctx=2048, n_parallel=4)
    monkeypatch.setattr("genforge.engines.llama.release_zero_pages", lambda before: 0)
    assert _engine_texts(kept, jobs) == texts
    assert all(texts.values())


def test_greedy_tokens_picked_inside_the_decode_are_the_argmax_of_the_logits(tmp_path, monkeypatch):
    """Greedy slots get llama.cpp's greedy sampler inside the decode graph; the tokens are the ones the argmax of
    the logits picks, alone, batched with each other, and beside sampled sequences whose slots have none."""
    model = open_catalog(make_settings(tmp_path)).resolve(DEFAULT_MODEL)

    def job(name: str, temperature: float) -> GenerationJob:
        params = TextSettings(max_tokens=40, temperature=temperature, top_p=0.9, seed=7)
        return GenerationJob(name, "text", model, f"Write a story about {name}.", None, params)

    mix = [job("a fox", 0), job("a ship", 0.8), job("a lamp", 0), job("a cloud", 0.8)]
    in_graph = LlamaEngine(n_threads=2, n_ctx=512, n_parallel=4)
    batched = _engine_texts(in_graph, mix)
    assert set(in_graph._in_graph) == {0, 2}  # the greedy slots; the sampled ones read their logits
    for temperatures in [(0.8, 0), (0, 0.8)]:  # slots 0 and 1 switch twice: greedy <-> sampled
        texts = _engine_texts(in_graph, [job("a dog", temperatures[0]), job("a kite", temperatures[1])])
        assert texts["a dog"] and texts["a kite"]
    in_python = LlamaEngine(n_threads=2, n_ctx=512, n_parallel=4)
    monkeypatch.setattr(in_python, "_sample_in_graph", lambda slot, greedy: None)  # argmax in Python
    alone = {j.content_id: _engine_texts(in_python, [j])[j.content_id] for j in mix}
    assert batched == alone
