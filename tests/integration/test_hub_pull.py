"""`genforge models pull hf:...` against a local server that speaks the hub's download protocol: the real
packaged GGUF (and a tiny diffusers pipeline) verified against the hub's own hash before registration,
resumed after a cut or Ctrl-C, refused when corrupt, and fast, typed failures for 404, 401 and no hub."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (
    GENERATE,
    GENFORGE,
    cli_env,
    make_settings,
    open_catalog,
    packaged_model_path,
    run_cli,
    running_app,
    sha256,
)
from genforge.errors import ModelIntegrityFailed, ModelNotFound, ModelUnavailable
from genforge.stores import hub
from hub_server import COMMIT, Hub, HubFile


@pytest.fixture(scope="module")
def gguf() -> bytes:
    return packaged_model_path().read_bytes()


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """A fresh hub server; HF_ENDPOINT points at it (for this process and the CLI's)."""
    server_state = Hub()
    server = server_state.serve()
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}", "HF_HOME": str(tmp_path / "hf-home")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server_state, env
    server.shutdown()


def catalog_at(data: Path):
    return open_catalog(make_settings(data, preload=False))


def hub_files(data: Path) -> list[Path]:
    root = data / "models" / "hub"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_pull_verifies_registers_and_the_record_carries_the_source(tmp_path, hub_env, gguf):
    state, env = hub_env
    state.files["genforge-test/smol/smol.gguf"] = HubFile(gguf)
    run = run_cli(tmp_path, "models", "pull", "hf:genforge-test/smol/smol.gguf", "--name", "smol-hub", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "verified" in run.stdout and sha256(gguf)[:12] in run.stdout
    (path,) = hub_files(tmp_path)
    assert path.name == "smol.gguf" and COMMIT in str(path) and path.read_bytes() == gguf

    with running_app(make_settings(tmp_path, preload=False)) as client:
        models = {m["name"]: m for m in client.get("/api/v1/models").json()["items"]}
        assert models["smol-hub"]["installed"] and models["smol-hub"]["source"] == "hub"
        assert models["smol-hub"]["hub"] == {"repo": "genforge-test/smol", "revision": COMMIT, "file": "smol.gguf"}
        body = {"content_type": "text", "model": "smol-hub", "prompt": "Name a bird.", "params": {"max_tokens": 8}}
        resp = client.post(GENERATE, json=body)
        assert resp.status_code == 201, resp.text
        rec = resp.json()
    assert rec["model"]["file_sha256"] == sha256(gguf)
    assert rec["model"]["source"] == {"repo": "genforge-test/smol", "revision": COMMIT, "file": "smol.gguf"}


def test_a_connection_cut_halfway_is_resumed_with_a_range_request(tmp_path, hub_env, gguf):
    state, _ = hub_env
    half = len(gguf) // 2
    state.files["o/r/m.gguf"] = HubFile(gguf, cut_once_at=half)
    model = catalog_at(tmp_path).pull("hf:o/r/m.gguf")
    assert model.sha256 == sha256(gguf) and Path(model.path).read_bytes() == gguf
    ranges = [rng for method, path, rng in state.requests if method == "GET" and path.endswith("m.gguf")]
    # The retry asks for the rest from what was written (whole chunks of what arrived before the cut).
    assert len(ranges) == 2 and ranges[0] == "" and ranges[1].startswith("bytes="), ranges
    assert 0 < int(ranges[1].removeprefix("bytes=").rstrip("-")) <= half


def test_ctrl_c_leaves_a_partial_file_that_the_next_pull_resumes(tmp_path, hub_env, gguf):
    state, env = hub_env
    state.files["o/r/m.gguf"] = f = HubFile(gguf, slow=True)
    proc = subprocess.Popen(
        [str(GENFORGE), "models", "pull", "hf:o/r/m.gguf"],
        env={**cli_env(tmp_path), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.stat().st_size > 1 << 20 for p in hub_files(tmp_path)):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) != 0
    (partial,) = hub_files(tmp_path)
    assert partial.name.endswith(".partial") and 0 < partial.stat().st_size < len(gguf)
    kept = partial.stat().st_size
    assert catalog_at(tmp_path).entries()[-1].name != "m"  # nothing registered

    f.slow = False
    run = run_cli(tmp_path, "models", "pull", "hf:o/r/m.gguf", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    last_get = [rng for method, path, rng in state.requests if method == "GET" and path.endswith("m.gguf")][-1]
    assert last_get == f"bytes={kept}-"
    (done,) = hub_files(tmp_path)
    assert done.name == "m.gguf" and sha256(done.read_bytes()) == sha256(gguf)


def test_a_file_that_does_not_match_the_hubs_sha256_is_deleted_and_not_registered(tmp_path, hub_env, gguf):
    state, env = hub_env
    state.files["o/bad/bad.gguf"] = HubFile(gguf, claimed_sha256="0" * 64)
    run = run_cli(tmp_path, "models", "pull", "hf:o/bad/bad.gguf", "--name", "smol-bad", env=env)
    assert run.returncode != 0
    assert "model_integrity_failed" in run.stderr and "deleted" in run.stderr
    assert hub_files(tmp_path) == []
    assert "smol-bad" not in {e.name for e in catalog_at(tmp_path).entries()}


def test_a_pinned_sha256_is_checked_instead_of_the_hubs(tmp_path, hub_env, gguf):
    state, _ = hub_env
    state.files["o/r/m.gguf"] = HubFile(gguf)
    with pytest.raises(ModelIntegrityFailed):
        hub.pull_file(hub.parse_ref("hf:o/r/m.gguf"), tmp_path, pinned="f" * 64)
    assert list(tmp_path.rglob("*.gguf*")) == []


def test_404_and_401_are_typed_and_a_token_opens_the_repository(tmp_path, hub_env, gguf, monkeypatch):
    state, _ = hub_env
    state.files["o/private/m.gguf"] = HubFile(gguf)
    state.token_required["o/private"] = "s3cret"
    catalog = catalog_at(tmp_path)
    with pytest.raises(ModelNotFound, match="404"):
        catalog.pull("hf:o/nothing/here.gguf")
    with pytest.raises(ModelUnavailable, match="401") as refused:
        catalog.pull("hf:o/private/m.gguf")
    assert "HF_TOKEN" in refused.value.hint
    monkeypatch.setenv("HF_TOKEN", "s3cret")
    assert catalog.pull("hf:o/private/m.gguf").sha256 == sha256(gguf)


def test_offline_or_an_unreachable_hub_fails_fast_with_the_add_hint(tmp_path, hub_env, monkeypatch):
    catalog = catalog_at(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable) as offline:
        catalog.pull("tinyllama-1.1b-chat")
    assert "genforge models add PATH" in offline.value.hint
    monkeypatch.delenv("HF_HUB_OFFLINE")

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}")
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as refused:
        catalog.pull("hf:o/r/m.gguf")
    assert "models add" in refused.value.hint and time.monotonic() - started < 5

    monkeypatch.setattr(hub, "METADATA_TIMEOUT_S", 1.0)
    with socket.socket() as silent:  # accepts connections (backlog) and never answers: no hang
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(ModelUnavailable):
            catalog.pull("hf:o/r/m.gguf")
        assert time.monotonic() - started < 10
    assert hub_files(tmp_path) == []


def test_the_cli_offline_exits_non_zero_with_model_unavailable(tmp_path):
    run = run_cli(tmp_path, "models", "pull", "tinyllama-1.1b-chat", env={"HF_HUB_OFFLINE": "1"}, timeout=60)
    assert run.returncode != 0 and "model_unavailable" in run.stderr and "models add" in run.stderr


def test_hub_aliases_are_listed_as_pullable(tmp_path):
    with running_app(make_settings(tmp_path, preload=False)) as client:
        models = {m["name"]: m for m in client.get("/api/v1/models").json()["items"]}
    for name, repo in (("tinyllama-1.1b-chat", "hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/"), ("sd-turbo", "hf:")):
        assert models[name]["installed"] is False and models[name]["source"] == "hub"
        assert models[name]["package"].startswith(repo)
    run = run_cli(tmp_path, "models", "list")
    assert "tinyllama-1.1b-chat" in run.stdout and "sd-turbo" in run.stdout


def test_a_diffusers_pipeline_pull_fetches_only_the_files_it_needs(tmp_path, hub_env, monkeypatch):
    pytest.importorskip("diffusers", reason="the image extra (diffusers) is not installed")
    from image_fixtures import tiny_sd

    state, _ = hub_env
    built = tiny_sd(tmp_path / "built")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # image_fixtures closes the hub for diffusers
    for f in (p for p in built.rglob("*") if p.is_file()):
        state.files[f"o/tiny-sd/{f.relative_to(built)}"] = HubFile(f.read_bytes())
    unet = (built / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    state.files["o/tiny-sd/unet/diffusion_pytorch_model.fp16.safetensors"] = HubFile(unet)  # a variant: not needed
    state.files["o/tiny-sd/sample.png"] = HubFile(b"\x89PNG not needed" * 100)

    model = catalog_at(tmp_path / "data").pull("hf:o/tiny-sd", as_name="tiny-hub")
    # a diffusers pipeline, run by the image backend this machine's settings choose (OpenVINO on a CPU)
    assert model.content_type == "image" and model.engine in ("diffusers", "openvino-diffusers")
    assert model.source == {"repo": "o/tiny-sd", "revision": COMMIT, "file": None}
    got = sorted(str(p.relative_to(model.path)) for p in Path(model.path).rglob("*") if p.is_file())
    assert got == sorted(str(p.relative_to(built)) for p in built.rglob("*") if p.is_file())
    for name in got:  # every file verified and intact
        assert (Path(model.path) / name).read_bytes() == (built / name).read_bytes()
    small = [k for k, v in state.files.items() if len(v.data) < 1024 and k.endswith(".json")]
    assert small, "the small config files are verified by their git blob sha1"
    assert os.path.basename(model.path) == COMMIT

    with running_app(make_settings(tmp_path / "data", preload=False)) as client:  # and it makes real images
        body = {"content_type": "image", "model": "tiny-hub", "prompt": "a red square",
                "params": {"width": 64, "height": 64, "steps": 2, "seed": 1}}  # fmt: skip
        resp = client.post(GENERATE, json=body)
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    assert rec["model"]["source"]["repo"] == "o/tiny-sd" and rec["model"]["file_sha256"] == model.sha256
    assert rec["credentials"]["signed"] is True


def test_a_request_for_an_alias_not_pulled_yet_says_how_to_pull_it(tmp_path):
    with running_app(make_settings(tmp_path, preload=False)) as client:
        resp = client.post(GENERATE, json={"content_type": "text", "model": "tinyllama-1.1b-chat", "prompt": "Hi"})
    assert resp.status_code == 503, resp.text
    err = resp.json()["error"]
    assert err["code"] == "model_unavailable" and "genforge models pull tinyllama-1.1b-chat" in err["hint"]


# --- a hostile hub: the names it supplies become paths only when they stay inside the models folder ------------
def written_by_pull(tmp_path: Path) -> list[Path]:
    """Every file under tmp_path a pull could have written: in the models folder, or anywhere outside the data
    dir (tmp_path/data) and the hub client's home."""
    data, home = tmp_path / "data", tmp_path / "hf-home"
    return sorted(
        p
        for p in tmp_path.rglob("*")
        if (p.is_file() or p.is_symlink())
        and not p.is_relative_to(home)
        and (p.is_relative_to(data / "models") or not p.is_relative_to(data))
    )


@pytest.mark.parametrize("commit", ["ABSOLUTE", "../../../../../escaped", "main", "c0ffee"])
def test_a_commit_that_is_not_40_hex_digits_fails_the_pull_and_writes_nothing(tmp_path, hub_env, gguf, commit):
    state, _ = hub_env
    state.commit = str(tmp_path / "escaped") if commit == "ABSOLUTE" else commit
    state.files["o/r/m.gguf"] = HubFile(gguf)
    with pytest.raises(ModelIntegrityFailed, match="40 hex digits") as refused:
        catalog_at(tmp_path / "data").pull("hf:o/r/m.gguf")
    assert "nothing was written" in refused.value.hint
    assert written_by_pull(tmp_path) == []
    assert "m" not in {e.name for e in catalog_at(tmp_path / "data").entries()}


def pipeline_index(*components: str) -> bytes:
    return json.dumps(
        {"_class_name": "StableDiffusionPipeline", **{c: ["diffusers", "UNet2DConditionModel"] for c in components}}
    ).encode()


@pytest.mark.parametrize("hostile", ["climb", "absolute", "nul"])
def test_a_pipeline_listing_a_name_outside_its_folder_fails_and_writes_nothing(tmp_path, hub_env, hostile):
    state, env = hub_env
    escaped = tmp_path / "escaped"
    name = {
        "climb": "unet/" + "../" * 16 + str(escaped).lstrip("/") + "/config.json",
        "absolute": str(escaped / "config.json"),
        "nul": "unet/config\0.json",
    }[hostile]
    state.files["o/pipe/model_index.json"] = HubFile(pipeline_index("unet"))
    state.files["o/pipe/unet/config.json"] = HubFile(b'{"honest": true}')
    state.listing["o/pipe"] = ["model_index.json", "unet/config.json", name]
    run = run_cli(tmp_path / "data", "models", "pull", "hf:o/pipe", "--name", "evil-pipe", env=env)
    assert run.returncode != 0 and "model_integrity_failed" in run.stderr, run.stdout + run.stderr
    assert written_by_pull(tmp_path) == []


def test_a_component_key_outside_the_folder_fails_and_leaves_nothing_half_written(tmp_path, hub_env):
    state, _ = hub_env
    state.files["o/pipe/model_index.json"] = HubFile(pipeline_index("unet", "../../../../escaped"))
    with pytest.raises(ModelIntegrityFailed, match="component"):
        catalog_at(tmp_path / "data").pull("hf:o/pipe")
    assert written_by_pull(tmp_path) == []
    assert not (tmp_path / "data" / "models" / "hub" / "o--pipe").exists(), "the pull left its folders behind"


def test_a_link_inside_the_models_folder_that_leads_out_is_not_followed(tmp_path, hub_env):
    state, _ = hub_env
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = tmp_path / "data" / "models" / "hub" / "o--pipe" / COMMIT
    folder.mkdir(parents=True)
    (folder / "unet").symlink_to(elsewhere)  # planted by whoever could write there before
    state.files["o/pipe/model_index.json"] = HubFile(pipeline_index("unet"))
    state.files["o/pipe/unet/config.json"] = HubFile(b'{"honest": true}')
    with pytest.raises(ModelIntegrityFailed, match="outside"):
        catalog_at(tmp_path / "data").pull("hf:o/pipe")
    assert list(elsewhere.iterdir()) == []
