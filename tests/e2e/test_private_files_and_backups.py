"""Issue 27, findings 2, 5, 6 and 7 through the real CLI: what genforge creates is private whatever the umask (the
server, `keys create`, `models pull`, backups, restores); a backup keeps the signing keystore, so a restored
server verifies its earlier artifacts as its own; restore refuses a backup whose records lead outside the artifact
directory, and an artifact directory that is not empty."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import (
    GENERATE,
    GENFORGE,
    cli_env,
    make_settings,
    packaged_model_path,
    run_cli,
    running_app,
    text_body,
)
from genforge.stores.backup import DB_NAME, KEYSTORE
from hub_server import Hub, HubFile

LOOSE = 0o022  # the usual umask: without care, directories 0755 and files 0644


@contextmanager
def umask(mask: int) -> Iterator[None]:
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def cli(data: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`genforge ARGS` under the loose umask."""
    return subprocess.run(
        [str(GENFORGE), *args],
        env={**cli_env(data), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        umask=LOOSE,
    )


def readable_by_others(root: Path) -> list[str]:
    """Every directory or file at or below `root` that its group or others may use."""
    paths = [root, *root.rglob("*")]
    return [
        f"{p} {oct(p.lstat().st_mode & 0o777)}"
        for p in paths
        if not p.is_symlink() and p.lstat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    ]


def make_records(data: Path) -> dict:
    with umask(LOOSE), running_app(make_settings(data, preload=False)) as client:
        resp = client.post(GENERATE, json=text_body(max_tokens=8))
        assert resp.status_code == 201, resp.text
        return resp.json()


def test_everything_genforge_creates_is_private_whatever_the_umask(tmp_path):
    # The server's start and a generation: data dir, database (+ -wal, -shm), keystore, artifacts.
    served = tmp_path / "new" / "served"  # its parent is missing too: genforge makes both
    make_records(served)
    assert (served / "genforge.db").is_file() and (served / "credentials" / "keystore.json").is_file()
    assert any((served / "artifacts").rglob("*.txt"))
    assert readable_by_others(tmp_path / "new") == []

    # `keys create` on a data dir it makes.
    keys = tmp_path / "keys"
    run = cli(keys, "keys", "create", "--name", "ops", "--scope", "admin")
    assert run.returncode == 0, run.stderr
    assert readable_by_others(keys) == []

    # `models pull` from a hub into a data dir it makes.
    hub = Hub()
    hub.files["o/r/m.gguf"] = HubFile(packaged_model_path().read_bytes())
    server = hub.serve()
    try:
        # The hub is this local one: HF_HUB_OFFLINE, if an earlier test in this process set it, does not apply.
        env = {
            "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
            "HF_HOME": str(tmp_path / "hf"),
            "HF_HUB_OFFLINE": "0",
        }
        pulled = tmp_path / "pulled"
        run = cli(pulled, "models", "pull", "hf:o/r/m.gguf", env=env)
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        server.shutdown()
    assert any((pulled / "models").rglob("m.gguf"))
    assert readable_by_others(pulled) == []

    # A backup (it holds the private keys) and what it restores.
    run = cli(served, "backup", str(tmp_path / "backup"))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "backup" / KEYSTORE).is_file()
    assert readable_by_others(tmp_path / "backup") == []
    run = cli(tmp_path / "restored", "restore", str(tmp_path / "backup"))
    assert run.returncode == 0, run.stderr
    assert readable_by_others(tmp_path / "restored") == []


def test_a_restored_backup_verifies_earlier_artifacts_as_its_own(tmp_path):
    pytest.importorskip("c2pa", reason="c2pa-python is not installed")
    data = tmp_path / "data"
    with running_app(make_settings(data, preload=False)) as client:
        body = {"content_type": "image", "model": "portrait", "prompt": "a face", "params": {"seed": 11}}
        resp = client.post(GENERATE, json=body)
        assert resp.status_code == 201, resp.text
        png = tmp_path / "earlier.png"
        png.write_bytes(client.get(resp.json()["artifact"]["url"]).content)
    assert "credentials: valid" in run_cli(data, "verify", str(png)).stdout

    assert run_cli(data, "backup", str(tmp_path / "backup")).returncode == 0
    restore = run_cli(tmp_path / "restored", "restore", str(tmp_path / "backup"))
    assert restore.returncode == 0, restore.stdout + restore.stderr
    run = run_cli(tmp_path / "restored", "verify", str(png))
    assert run.returncode == 0 and "credentials: valid" in run.stdout, run.stdout + run.stderr
    assert "signing keystore" in restore.stdout


def backup_of_one_record(tmp_path: Path) -> tuple[Path, dict]:
    rec = make_records(tmp_path / "data")
    run = run_cli(tmp_path / "data", "backup", str(tmp_path / "backup"))
    assert run.returncode == 0, run.stderr
    return tmp_path / "backup", rec


@pytest.mark.parametrize("hostile", ["absolute", "climb", "link"])
def test_restore_refuses_a_backup_whose_records_lead_outside_the_artifact_dir(tmp_path, hostile):
    backup, rec = backup_of_one_record(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("a file of someone else's")
    if hostile == "link":  # the record is honest, its file in the backup is a link to elsewhere
        (stored,) = (backup / "artifacts").rglob("*.txt")
        stored.unlink()
        stored.symlink_to(victim)
    else:
        path = str(victim) if hostile == "absolute" else "../../victim.txt"
        conn = sqlite3.connect(backup / DB_NAME)
        with conn:
            conn.execute("UPDATE content SET artifact_path = ? WHERE id = ?", (path, rec["id"]))
        conn.close()
    restored = tmp_path / "restored"
    run = run_cli(restored, "restore", str(backup))
    assert run.returncode != 0, run.stdout
    assert ("artifact_outside_store" if hostile != "link" else "not a plain file") in run.stderr, run.stderr
    assert not restored.exists() or not any(restored.iterdir()), "a refused restore wrote into the data dir"
    assert victim.read_text() == "a file of someone else's"


def test_restore_refuses_an_artifact_dir_that_is_not_empty(tmp_path):
    backup, _ = backup_of_one_record(tmp_path)
    shared = tmp_path / "shared-artifacts"
    live = shared / "ab" / ("ab" + "2" * 62 + ".png")  # another instance's artifact
    live.parent.mkdir(parents=True)
    live.write_bytes(b"another database's file")
    restored = tmp_path / "restored"
    run = run_cli(restored, "restore", str(backup), env={"GENFORGE_ARTIFACT_DIR": str(shared)})
    assert run.returncode != 0 and "artifact directory" in run.stderr, run.stdout + run.stderr
    assert not restored.exists() or not any(restored.iterdir())
    assert live.read_bytes() == b"another database's file"
