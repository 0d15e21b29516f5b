"""Screenshots of the web UI for docs/: Generate, History and Record, from a real server with real records.

    .venv/bin/python scripts/ui_screenshots.py [--out docs]

Starts `genforge serve` on a throw-away data dir, makes a few records (text, speech, a portrait, a failure),
and drives Debian's chromium with Playwright (never `playwright install`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs")
    out = Path(ap.parse_args().out)
    data, port = Path(tempfile.mkdtemp(prefix="gf-shots-")), free_port()
    base = f"http://127.0.0.1:{port}"
    genforge = Path(sys.executable).parent / "genforge"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GENFORGE_")}, "GENFORGE_DATA_DIR": str(data)}
    server = subprocess.Popen([genforge, "serve", "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
    try:
        http = httpx.Client(base_url=base, timeout=300)
        for _ in range(300):
            try:
                if http.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        gen = "/api/v1/content/generate"
        http.post(gen, json={"content_type": "image", "prompt": "a portrait", "model": "portrait",
                             "params": {"width": 256, "height": 256, "seed": 7}})  # fmt: skip
        http.post(gen, json={"content_type": "speech", "prompt": "Hello from genforge.", "params": {"seed": 1}})
        http.post(gen, json={"content_type": "image", "prompt": "a lighthouse at dusk"})  # fails: no image model
        rec = http.post(gen, json={"content_type": "text", "prompt": "Describe a lighthouse in two sentences.",
                                   "params": {"max_tokens": 60, "seed": 11, "temperature": 0}}).json()  # fmt: skip
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
            pg = browser.new_page(viewport={"width": 1200, "height": 860})
            pg.goto(base + "/")
            pg.get_by_label("Prompt").fill("Write a haiku about the sea.")
            pg.get_by_label("Max tokens").fill("48")
            pg.get_by_label("Seed").fill("3")
            pg.get_by_role("button", name="Generate").click()
            expect(pg.locator("[aria-live].complete")).to_be_visible(timeout=120_000)
            pg.screenshot(path=out / "ui-generate.png")
            pg.goto(base + "/#/history")
            expect(pg.locator(".card audio")).to_have_count(1, timeout=30_000)
            pg.wait_for_function("() => [...document.querySelectorAll('.card img')].every(i => i.naturalWidth > 0)")
            pg.screenshot(path=out / "ui-history.png")
            pg.goto(f"{base}/#/content/{rec['id']}")
            pg.get_by_role("button", name="Verify").click()
            expect(pg.get_by_text("Intact:")).to_be_visible(timeout=30_000)
            pg.screenshot(path=out / "ui-record.png", full_page=True)
            browser.close()
        print(f"wrote {out}/ui-generate.png, ui-history.png, ui-record.png")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
