"""The OpenVINO image engine on the tiny Stable Diffusion pipeline (real diffusers code, random weights):
chosen by default on the CPU, converted once with progress events, cached and checked, close to the torch
engine's image for a seed, deterministic across processes, cancellable between steps, and honest about a
pipeline it cannot convert (a typed error, or with `auto` the torch engine and a warning in the record)."""

from __future__ import annotations

import json
import shutil

import diffusers
import numpy as np
import pytest

from conftest import (
    CONTENT,
    GENERATE,
    assert_error,
    failed_record,
    make_settings,
    run_cli,
    running_app,
    runtime_of,
    wait_for,
)
from genforge.contenttypes.image import DiffusersSettings, ImageRecord
from genforge.engines.base import GenerationJob, ResolvedModel
from genforge.engines.diffusers import DiffusersEngine
from genforge.engines.openvino_diffusers import (
    CALIBRATION_PROMPTS,
    CALIBRATION_STEPS,
    MANIFEST,
    W8A8_STAGES,
    OpenVINODiffusersEngine,
    cache_key,
    calibration_inputs,
    check_entry,
    nncf_version,
)
from genforge.engines.openvino_diffusers import openvino_version as ov_version
from genforge.media.files import sha256_path
from genforge.media.images import compare_provenance, read_provenance
from image_fixtures import decode, pixels_sha256, stats, tiny_sd

MODEL = "tiny-sd"
PARAMS = {"width": 64, "height": 64, "steps": 4, "seed": 11}
# Measured on the tiny pipeline: the OpenVINO image equals the torch one after rounding to 8 bits (mean
# absolute difference 0.0 of 255). Allowed: float32 kernels that sum in another order may move a pixel.
MAX_MEAN_ABS_DIFF = 1.0
# Measured on the tiny pipeline (random weights) against float32: int8 weights 0.6 of 255 (max 4), int8 weights and
# activations (w8a8) 6.5 (max 41): the same picture, a little noisier. Allowed: about twice that.
MAX_MEAN_ABS_DIFF_INT8 = 2.0
MAX_MEAN_ABS_DIFF_W8A8 = 13.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_sd(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, checkpoint):
    data = tmp_path_factory.mktemp("img-openvino") / "data"
    run = run_cli(data, "models", "add", str(checkpoint), "--type", "image", "--name", MODEL)
    assert run.returncode == 0, run.stdout + run.stderr
    return data


@pytest.fixture(scope="module")
def client(data_dir):
    # GENFORGE_IMAGE_BACKEND left at its default (auto): no CUDA here, so OpenVINO
    with running_app(make_settings(data_dir, preload=False)) as client:
        yield client


def sse(client, payload: dict) -> tuple[list[dict], dict]:
    """(progress events, final record) of a streamed generation."""
    with client.stream("POST", GENERATE, json={**payload, "stream": True}) as resp:
        assert resp.status_code == 201, resp.read()
        blocks = [b for b in "".join(resp.iter_text()).split("\n\n") if b.strip()]
    progress = [json.loads(b.split("data: ", 1)[1]) for b in blocks if b.startswith("event: progress")]
    assert blocks[-1].startswith("event: done"), blocks[-1]
    return progress, json.loads(blocks[-1].split("data: ", 1)[1])


def body(**params) -> dict:
    return {"content_type": "image", "prompt": "a red bicycle", "model": MODEL, "params": {**PARAMS, **params}}


@pytest.fixture(scope="module")
def first(client):
    """The first generation: converts the checkpoint (progress stage "converting"), then 4 steps."""
    progress, rec = sse(client, body())
    png = client.get(rec["artifact"]["url"]).content
    return progress, rec, png


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(decode(png)[0], dtype=np.float32)


def test_first_use_converts_with_progress_events_then_runs_the_steps(first):
    progress, rec, _ = first
    converting = [p for p in progress if p.get("stage") == "converting"]
    steps = [p for p in progress if "stage" not in p]
    assert converting and converting[-1]["step"] == converting[-1]["total"]
    assert [p["step"] for p in converting] == list(range(converting[0]["total"] + 1))
    assert [(p["step"], p["total"]) for p in steps] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert progress.index(converting[-1]) < progress.index(steps[0])
    assert all(set(p) <= {"type", "step", "total", "stage"} for p in progress)


def test_the_record_says_openvino_ran_with_its_version_precision_and_cache_key(first, checkpoint, data_dir):
    _, rec, png = first
    assert rec["status"] == "succeeded" and rec["warnings"] == []
    assert rec["model"]["engine"] == "openvino-diffusers"
    assert rec["model"]["engine_version"] == f"diffusers {diffusers.__version__} (OpenVINO {ov_version()}, cpu)"
    key = cache_key(sha256_path(checkpoint), ov_version(), "fp32")
    assert rec["image"]["backend"] == "openvino" and rec["image"]["backend_version"] == ov_version()
    assert rec["image"]["precision"] == "fp32" and rec["image"]["cache_key"] == key
    assert rec["params"]["precision"] == "default"
    assert (data_dir / "ov-cache" / key / MANIFEST).is_file()
    # the validator passed and the PNG carries provenance that matches the record
    assert stats(png)["size"] == (64, 64) and stats(png)["std"] > 10
    assert compare_provenance(read_provenance(png), ImageRecord.model_validate(rec)) == []
    assert json.loads(read_provenance(png)["image"])["cache_key"] == key


def test_the_image_is_close_to_the_torch_engines_for_the_same_seed(first, checkpoint):
    _, rec, png = first
    model = ResolvedModel(MODEL, "image", "diffusers", str(checkpoint), sha256_path(checkpoint), 1, True)
    job = GenerationJob("torch-ref", "image", model, "a red bicycle", None, DiffusersSettings(**rec["params"]))
    torch_png = DiffusersEngine(threads=1, device="cpu").generate(job, lambda e: None, lambda: False).data
    diff = np.abs(pixels(png) - pixels(torch_png))
    assert diff.mean() <= MAX_MEAN_ABS_DIFF, f"mean abs difference {diff.mean():.3f}, max {diff.max()}"


def test_separate_processes_reuse_the_cache_and_give_identical_pixels(first, data_dir):
    _, rec, png = first
    manifest = data_dir / "ov-cache" / rec["image"]["cache_key"] / MANIFEST
    written = (manifest.stat().st_ino, manifest.stat().st_mtime_ns)
    runs = []
    for _ in range(2):  # two CLI processes, each with its own engine worker
        run = run_cli(data_dir, "generate", "image", "a red bicycle", "--model", MODEL, "--seed", "11",
                      "--width", "64", "--height", "64", "--steps", "4", "--json")  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        runs.append(json.loads(run.stdout[: run.stdout.rindex("}") + 1]))
    # the entry was used as it was, not converted again (a rebuild renames a new folder into place)
    assert (manifest.stat().st_ino, manifest.stat().st_mtime_ns) == written
    for cli in runs:
        assert cli["model"]["engine"] == "openvino-diffusers" and cli["image"]["cache_key"] == rec["image"]["cache_key"]
        # a cached load reads and compiles; the first one converted (3x faster on a quiet machine, less under load)
        assert cli["timings"]["load_ms"] < rec["timings"]["load_ms"], (cli["timings"], rec["timings"])
    files = [artifact_of(data_dir, cli) for cli in runs]
    assert pixels_sha256(files[0]) == pixels_sha256(files[1]) == pixels_sha256(png)


def artifact_of(data_dir, rec: dict) -> bytes:
    sha = rec["artifact"]["sha256"]
    return next((data_dir / "artifacts").rglob(f"{sha}*")).read_bytes()


def test_a_second_load_in_the_same_worker_is_warm(client, first):
    _, rec = sse(client, body(seed=12))
    assert rec["timings"]["load_ms"] == 0 and rec["image"]["cache_key"] == first[1]["image"]["cache_key"]


def test_a_corrupt_entry_is_rebuilt_not_trusted(first, checkpoint, tmp_path):
    _, rec, png = first
    cache = tmp_path / "ov-cache"
    key = rec["image"]["cache_key"]
    model = ResolvedModel(MODEL, "image", "openvino-diffusers", str(checkpoint), sha256_path(checkpoint), 1, True)
    job = GenerationJob("ov-rebuild", "image", model, "a red bicycle", None, DiffusersSettings(**rec["params"]))
    engine = OpenVINODiffusersEngine(threads=1, cache_dir=cache, fallback=False)
    engine.generate(job, lambda e: None, lambda: False)
    weights = cache / key / "unet.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert "unet.bin does not match its sha256" in check_entry(cache / key, {"model_sha256": model.sha256})

    events: list[dict] = []
    out = OpenVINODiffusersEngine(threads=1, cache_dir=cache, fallback=False).generate(
        job, events.append, lambda: False
    )
    assert any(e.get("stage") == "converting" for e in events), "the corrupt entry was used"
    assert check_entry(cache / key, {"model_sha256": model.sha256}) is None
    assert pixels_sha256(out.data) == pixels_sha256(png)


def test_a_stale_or_incomplete_entry_is_refused(first, data_dir, tmp_path):
    _, rec, _ = first
    entry = tmp_path / "entry"
    shutil.copytree(data_dir / "ov-cache" / rec["image"]["cache_key"], entry)
    manifest = json.loads((entry / MANIFEST).read_text())
    expected = {k: manifest[k] for k in ("format", "model_sha256", "openvino", "precision")}
    assert check_entry(entry, expected) is None
    assert "openvino" in check_entry(entry, {**expected, "openvino": "2099.1.0"})
    (entry / MANIFEST).write_text("{not json")
    assert "unreadable manifest" in check_entry(entry, expected)
    (entry / MANIFEST).write_text(json.dumps(manifest))
    (entry / "vae_decoder.xml").unlink()
    assert "vae_decoder.xml is unreadable" in check_entry(entry, expected)
    (entry / MANIFEST).unlink()
    assert check_entry(entry, expected) == "no manifest"


def test_int8_weights_are_a_recorded_parameter_with_their_own_cache_entry(client, first, checkpoint):
    _, fp32, fp32_png = first
    progress, rec = sse(client, body(precision="int8"))
    assert any(p.get("stage") == "converting" for p in progress)
    assert rec["status"] == "succeeded" and rec["params"]["precision"] == "int8"
    assert rec["image"]["precision"] == "int8"
    assert rec["image"]["cache_key"] == cache_key(sha256_path(checkpoint), ov_version(), "int8")
    png = client.get(rec["artifact"]["url"]).content
    assert compare_provenance(read_provenance(png), ImageRecord.model_validate(rec)) == []
    # int8 weights move pixels a little, not into another picture
    assert np.abs(pixels(png) - pixels(fp32_png)).mean() <= MAX_MEAN_ABS_DIFF_INT8


def test_w8a8_quantizes_the_unets_activations_with_its_own_recorded_cache_entry(client, first, checkpoint, data_dir):
    _, fp32, fp32_png = first
    progress, rec = sse(client, body(precision="w8a8"))
    converting = [p["step"] for p in progress if p.get("stage") == "converting"]
    assert converting == list(range(len(W8A8_STAGES) + 1))  # the calibration runs and the quantization included
    assert rec["status"] == "succeeded" and rec["warnings"] == []
    assert rec["params"]["precision"] == "w8a8" and rec["image"]["precision"] == "w8a8"
    key = cache_key(sha256_path(checkpoint), ov_version(), "w8a8")
    assert rec["image"]["cache_key"] == key
    entry = data_dir / "ov-cache" / key
    assert json.loads((entry / MANIFEST).read_text())["nncf"] == nncf_version()
    # int8 activations are FakeQuantize operations in the UNet and the text encoder (which int8 weights alone do
    # not add); the decoder keeps float32 activations
    fp32_entry = data_dir / "ov-cache" / fp32["image"]["cache_key"]
    assert (entry / "unet.xml").read_text().count('type="FakeQuantize"') > 10
    assert (entry / "text_encoder.xml").read_text().count('type="FakeQuantize"') > 4
    assert not (fp32_entry / "text_encoder.xml").exists()  # float32 and int8 keep the torch text encoder
    assert 'type="FakeQuantize"' not in (fp32_entry / "unet.xml").read_text()
    assert 'type="FakeQuantize"' not in (entry / "vae_decoder.xml").read_text()
    png = client.get(rec["artifact"]["url"]).content
    assert stats(png)["std"] > 10
    assert compare_provenance(read_provenance(png), ImageRecord.model_validate(rec)) == []
    diff = np.abs(pixels(png) - pixels(fp32_png))
    assert 0 < diff.mean() <= MAX_MEAN_ABS_DIFF_W8A8, f"mean abs difference {diff.mean():.3f}, max {diff.max()}"
    # the quantized model is deterministic: the same seed again gives the same pixels
    _, again = sse(client, body(precision="w8a8"))
    assert again["timings"]["load_ms"] == 0 and again["image"]["cache_key"] == key
    assert pixels_sha256(client.get(again["artifact"]["url"]).content) == pixels_sha256(png)


def test_w8a8_calibration_records_the_unets_inputs_along_real_denoising_runs(first, checkpoint, data_dir):
    import openvino as ov
    import torch

    _, rec, _ = first
    model = ResolvedModel(MODEL, "image", "diffusers", str(checkpoint), sha256_path(checkpoint), 1, True)
    pipe = DiffusersEngine(threads=1, device="cpu").open_pipeline(model, torch.float32)
    torch_unet, core = pipe.unet, ov.Core()
    unet = core.read_model(str(data_dir / "ov-cache" / rec["image"]["cache_key"] / "unet.xml"))
    prompts_done = []
    samples, token_ids = calibration_inputs(pipe, unet, core, 1, lambda: prompts_done.append(True))
    assert pipe.unet is torch_unet and len(prompts_done) == len(CALIBRATION_PROMPTS)
    # the text encoder's inputs: each prompt's token ids, then the empty negative prompt's, as the pipeline made them
    tokens = [
        pipe.tokenizer(p, padding="max_length", max_length=77, truncation=True).input_ids for p in CALIBRATION_PROMPTS
    ]
    empty = pipe.tokenizer("", padding="max_length", max_length=77).input_ids
    assert [ids.tolist() for ids in token_ids] == [x for t in tokens for x in ([t], [empty])]
    assert len(samples) == len(CALIBRATION_PROMPTS) * CALIBRATION_STEPS
    pipe.scheduler.set_timesteps(CALIBRATION_STEPS)
    schedule = [float(t) for t in pipe.scheduler.timesteps]
    for i, prompt in enumerate(CALIBRATION_PROMPTS):
        run = [list(s.values()) for s in samples[i * CALIBRATION_STEPS : (i + 1) * CALIBRATION_STEPS]]
        assert [float(t) for _, t, _ in run] == schedule  # every step of the checkpoint's own scheduler
        with torch.no_grad():
            cond, uncond = pipe.encode_prompt(prompt, "cpu", 1, True, "")
        for latents, _, text in run:  # a guided batch: the empty prompt's embeddings, then the prompt's
            assert latents.shape[0] == 2 and np.array_equal(latents[0], latents[1])
            np.testing.assert_allclose(text, torch.cat([uncond, cond]).numpy(), atol=1e-5)
        # the latents move along the schedule (the denoising ran), the first are the seeded noise
        assert all(not np.allclose(a[0], b[0]) for (a, _, _), (b, _, _) in zip(run, run[1:], strict=False))


def test_cancel_stops_between_steps(client, first):
    resp = client.post(GENERATE, json={**body(steps=150, width=128, height=128), "mode": "async"})
    assert resp.status_code == 202, resp.text
    cid = resp.json()["id"]
    wait_for(lambda: client.get(f"{CONTENT}/{cid}").json()["status"] == "running", what="the job to run")
    stopped = client.post(f"{CONTENT}/{cid}/cancel").json()
    assert stopped["status"] == "cancelled" and stopped["artifact"] is None, stopped
    assert stopped["error"]["code"] == "cancelled"
    step = int(stopped["error"]["message"].rsplit(" ", 1)[1]) if "after step" in stopped["error"]["message"] else 0
    assert step < 150


@pytest.fixture(scope="module")
def lcm(tmp_path_factory):
    """A pipeline this engine does not convert: its UNet takes LCM's guidance conditioning."""
    return tiny_sd(tmp_path_factory.getbasetemp(), lcm=True)


def test_auto_falls_back_to_torch_for_an_unconvertible_pipeline_and_says_so(client, lcm):
    runtime_of(client).catalog.add(lcm, name="lcm-sd", content_type="image")
    _, rec = sse(client, {**body(), "model": "lcm-sd"})
    assert rec["status"] == "succeeded"
    assert rec["model"]["engine"] == "diffusers" and rec["image"]["backend"] == "torch"
    assert rec["image"]["cache_key"] is None
    assert len(rec["warnings"]) == 1 and rec["warnings"][0].startswith("ran on torch: ")
    assert "time_cond_proj_dim" in rec["warnings"][0]
    png = client.get(rec["artifact"]["url"]).content
    assert compare_provenance(read_provenance(png), ImageRecord.model_validate(rec)) == []


def test_backend_openvino_refuses_an_unconvertible_pipeline_with_a_typed_error(tmp_path, lcm):
    with running_app(make_settings(tmp_path / "data", preload=False, image_backend="openvino")) as ov_only:
        runtime_of(ov_only).catalog.add(lcm, name="lcm-sd", content_type="image")
        resp = ov_only.post(GENERATE, json={**body(), "model": "lcm-sd"})
        err = assert_error(resp, 503, "model_unconvertible")
        assert "time_cond_proj_dim" in err["message"]
        assert "GENFORGE_IMAGE_BACKEND=torch" in err["hint"]
        failed_record(ov_only, resp, "model_unconvertible")


def test_backend_torch_runs_diffusers_on_torch_and_refuses_int8_precisions(tmp_path, checkpoint):
    with running_app(make_settings(tmp_path / "data", preload=False, image_backend="torch")) as torch_only:
        runtime_of(torch_only).catalog.add(checkpoint, name=MODEL, content_type="image")
        for precision in ("int8", "w8a8"):
            resp = torch_only.post(GENERATE, json=body(precision=precision))
            err = assert_error(resp, 422, "invalid_request")
            assert f"params.precision: {precision}" in err["message"] and "GENFORGE_IMAGE_BACKEND" in err["hint"]
        _, rec = sse(torch_only, body())
        assert rec["model"]["engine"] == "diffusers" and rec["image"]["backend"] == "torch"
