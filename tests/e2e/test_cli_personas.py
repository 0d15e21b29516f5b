"""`genforge personas ...` and `genforge post` as a user runs them (real portrait model, real records)."""

from __future__ import annotations

import json
import zipfile

from conftest import run_cli


def test_personas_and_a_post_from_the_command_line(tmp_path):
    data = tmp_path / "data"
    made = run_cli(data, "personas", "create", "mira", "--description", "travel blogger", "--image-model", "portrait",
                   "--seed", "4242", "--width", "256", "--forbid", "as an AI")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "persona mira version 1" in made.stdout
    edited = run_cli(data, "personas", "edit", "mira", "--description", "travel and food blogger")
    assert edited.returncode == 0 and "version 2" in edited.stdout, edited.stderr
    old = json.loads(run_cli(data, "personas", "show", "mira", "--version", "1").stdout)
    assert old["description"] == "travel blogger" and old["text"]["forbidden_phrases"] == ["as an AI"]
    assert "mira" in run_cli(data, "personas", "list").stdout

    zipped = tmp_path / "post.zip"
    made = run_cli(data, "post", "mira", "a sunrise hike", "--parts", "image", "--export", str(zipped))
    assert made.returncode == 0, made.stderr
    assert "image: succeeded" in made.stderr and "post id:" in made.stdout
    assert sorted(zipfile.ZipFile(zipped).namelist()) == ["image.png", "manifest.json"]

    refused = run_cli(data, "personas", "rm", "mira")
    assert refused.returncode == 1 and "[conflict]" in refused.stderr
    assert run_cli(data, "personas", "rm", "mira", "--force").returncode == 0
    missing = run_cli(data, "post", "mira", "a sunrise hike", "--parts", "image")
    assert missing.returncode == 2 and "[not_found]" in missing.stderr
