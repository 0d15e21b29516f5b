"""`genforge backup`, `restore` and `audit` through the real CLI, on records made by the real model."""

from __future__ import annotations

import json

from conftest import CONTENT, GENERATE, make_settings, run_cli, running_app, text_body
from genforge.stores.backup import DB_NAME, MANIFEST


def records(data_dir) -> dict[str, dict]:
    with running_app(make_settings(data_dir, preload=False)) as client:
        return {r["id"]: r for r in client.get(f"{CONTENT}?limit=500").json()["items"]}


def test_backup_restore_audit(tmp_path):
    data, dest, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    with running_app(make_settings(data)) as client:
        made = [client.post(GENERATE, json=text_body(max_tokens=8, seed=s)).json() for s in (1, 2, 3)]
        assert all(r["status"] == "succeeded" for r in made)
        # the backup runs while the server has the database open (SQLite's online backup API)
        result = run_cli(data, "backup", str(dest))
        assert result.returncode == 0, result.stderr
    assert (dest / DB_NAME).is_file()
    manifest = json.loads((dest / MANIFEST).read_text())
    assert manifest["missing"] == [] and manifest["artifacts"] == len({r["artifact"]["sha256"] for r in made})
    assert run_cli(data, "backup", str(dest)).returncode != 0  # never into a non-empty directory

    result = run_cli(restored, "restore", str(dest))
    assert result.returncode == 0, result.stderr
    assert run_cli(restored, "restore", str(dest)).returncode != 0  # never over an existing data dir
    audit = run_cli(restored, "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "3 succeeded record(s) checked, 0 problem(s)" in audit.stdout
    assert records(restored) == records(data)

    # lost and changed artifacts are caught, and --mark makes the records say so
    lost, changed = made[0], made[1]
    (restored / "artifacts" / lost["artifact"]["sha256"][:2] / f"{lost['artifact']['sha256']}.txt").unlink()
    path = restored / "artifacts" / changed["artifact"]["sha256"][:2] / f"{changed['artifact']['sha256']}.txt"
    path.write_text("edited behind genforge's back")
    audit = run_cli(restored, "audit")
    assert audit.returncode == 1
    assert f"artifact_lost {lost['id']}" in audit.stdout and f"artifact_changed {changed['id']}" in audit.stdout
    assert records(restored)[lost["id"]]["status"] == "succeeded"  # without --mark nothing changes

    assert run_cli(restored, "audit", "--mark").returncode == 1
    after = records(restored)
    for rec, code in ((lost, "artifact_lost"), (changed, "artifact_changed")):
        assert after[rec["id"]]["status"] == "failed"
        assert after[rec["id"]]["error"]["code"] == code
        assert rec["artifact"]["sha256"] in after[rec["id"]]["error"]["message"]
        assert after[rec["id"]]["artifact"] is None
    assert after[made[2]["id"]]["status"] == "succeeded"
    audit = run_cli(restored, "audit")
    assert audit.returncode == 0 and "1 succeeded record(s) checked, 0 problem(s)" in audit.stdout
