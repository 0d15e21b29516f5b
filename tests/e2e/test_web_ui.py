"""The browser UI against a real `genforge serve`: Debian's chromium driven by Playwright, by accessible names.

Needs the Debian package `chromium` (never `playwright install`: it downloads a browser and cannot here).
"""

from __future__ import annotations

import importlib.util
import re
import shutil

import pytest

from conftest import CONTENT, GENERATE, Server, long_generation_body, run_cli, text_body

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if importlib.util.find_spec("playwright") is None:
    pytest.skip("playwright is not installed (the `test` extra)", allow_module_level=True)
if CHROMIUM is None:
    pytest.skip("no chromium: install the Debian package (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

expect.set_options(timeout=60_000)  # generations on a shared 2-core machine take seconds, not milliseconds

ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
XSS = '<img src=x onerror="window.__pwned=1"> a tidepool'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("web-ui") / "data").start()
    srv.wait_ready()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context()
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(60_000)
    pg.base = str(server.http.base_url)
    yield pg
    ctx.close()
    assert not errors, f"script errors on the page: {errors}"


def create(server, body: dict) -> dict:
    resp = server.http.post(GENERATE, json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def open_history(pg, q: str | None = None):
    pg.goto(pg.base + "/")
    pg.get_by_role("link", name="History").click()
    if q is not None:
        pg.get_by_label("Search").fill(q)
        pg.get_by_label("Search").press("Enter")
    expect(pg.get_by_role("status").filter(has_text=re.compile("record|No records"))).to_be_visible()


def test_text_streams_into_the_live_region_before_the_record_is_final(page):
    page.goto(page.base + "/")
    page.get_by_label("Prompt").fill("Write a short poem about the night sky.")
    page.get_by_label("Max tokens").fill("32")
    page.get_by_label("Seed").fill("3")
    # count the live region's changes while it does not yet show a finished result
    page.evaluate("""() => { window.__partial = 0; const out = document.querySelector('[aria-live]');
        new MutationObserver(() => { if (!out.classList.contains('complete') && out.textContent.trim())
            window.__partial++; }).observe(out, {childList: true, subtree: true, characterData: true}); }""")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("[aria-live].complete")).to_be_visible()
    assert page.evaluate("window.__partial") >= 3, "tokens did not arrive before the final record"
    link = page.get_by_role("link", name=re.compile("^record "))
    rid = link.get_attribute("href").rsplit("/", 1)[1]
    rec = page.request.get(f"{page.base}{CONTENT}/{rid}").json()
    assert rec["status"] == "succeeded" and rec["params"]["seed"] == 3
    assert page.locator("[aria-live] pre").inner_text() == rec["text"], "the page shows the stored text"


def test_speech_ends_in_an_audio_player_with_a_duration(page):
    page.goto(page.base + "/")
    page.get_by_label("Content type").select_option("speech")
    page.get_by_label("Prompt").fill("Hello from the browser.")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("[aria-live].complete audio")).to_be_attached()
    page.wait_for_function("() => document.querySelector('[aria-live] audio').duration > 0.3")


def test_an_uploaded_audio_file_becomes_a_transcript_with_its_timings(page, server, tmp_path):
    pulled = run_cli(server.data_dir, "models", "pull", "whisper-base")
    assert pulled.returncode == 0, pulled.stderr
    speech = create(server, {"content_type": "speech", "prompt": "Please check the weather report tomorrow."})
    wav = tmp_path / "note.wav"
    wav.write_bytes(server.http.get(speech["artifact"]["url"]).content)
    page.goto(page.base + "/")
    page.get_by_label("Content type").select_option("transcript")
    page.get_by_label("Audio file").set_input_files(str(wav))
    page.get_by_role("button", name="Generate").click()
    segments = page.locator("[aria-live].complete .transcript ol.segments li")
    expect(segments.first).to_contain_text(re.compile("weather", re.IGNORECASE))
    expect(segments.first).to_contain_text(re.compile(r"\d\.\d\d–\d\.\d\d s"))


def test_a_failed_generation_shows_its_code_hint_and_failed_record(page):
    page.goto(page.base + "/")
    page.get_by_label("Content type").select_option("image")  # no image model named, none registered
    page.get_by_label("Prompt").fill("a lighthouse at dusk")
    page.get_by_role("button", name="Generate").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("model_unavailable")
    expect(alert).to_contain_text("Hint:")
    expect(page.locator("[aria-live].complete")).to_have_count(0)
    failed = alert.get_by_role("link", name=re.compile("Failed record"))
    failed.click()
    expect(page.get_by_role("heading", name=re.compile("image record"))).to_contain_text("failed")


def test_search_finds_a_record_by_a_word_only_in_its_generated_text(page, server):
    rec = create(server, text_body("Describe a volcano in two sentences.", max_tokens=32, seed=4, temperature=0))
    words = [w for w in re.findall(r"[A-Za-z]{6,}", rec["text"]) if w.lower() not in rec["prompt"].lower()]
    assert words, rec["text"]
    word = max(words, key=len)
    open_history(page, word)
    expect(page.locator(f"a[href*='{rec['id']}']")).to_have_count(1)
    expect(page.locator(".card")).to_have_count(server.http.get(CONTENT, params={"q": word}).json()["total"])


def test_an_html_prompt_is_shown_as_text_and_runs_nothing(page, server):
    rec = create(server, text_body(XSS, max_tokens=8))
    open_history(page)
    page.locator(f"a[href*='{rec['id']}']").click()
    expect(page.locator("pre.prompt")).to_have_text(XSS)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img[src='x']").count() == 0


def test_delete_asks_first_then_removes_the_record_from_the_gallery(page, server):
    rec = create(server, text_body("Name a colour.", max_tokens=8))
    page.goto(f"{page.base}/#/content/{rec['id']}")
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Keep it").click()
    assert server.http.get(f"{CONTENT}/{rec['id']}").status_code == 200, "nothing deleted without confirmation"
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Yes, delete it").click()
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    expect(page.locator(".card").first).to_be_visible()
    expect(page.locator(f"a[href*='{rec['id']}']")).to_have_count(0)
    assert server.http.get(f"{CONTENT}/{rec['id']}").status_code == 404


def test_queued_and_running_jobs_show_their_state_live_and_can_be_cancelled(page, server):
    ids = []  # one more than run at once (GENFORGE_PARALLEL, 4): the last one waits in the queue
    for _ in range(5):
        resp = server.http.post(GENERATE, json={**long_generation_body(), "mode": "async"})
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    try:
        open_history(page)
        queued = page.locator(".card", has=page.locator(f"a[href*='{ids[-1]}']"))
        expect(queued.get_by_role("status")).to_contain_text("Queued, position 1")
        running = page.locator(".card", has=page.locator(f"a[href*='{ids[0]}']"))
        expect(running.get_by_role("status")).to_contain_text("Running")
        queued.get_by_role("button", name="Cancel").click()
        expect(queued.get_by_role("status")).to_contain_text("cancelled")
        running.get_by_role("button", name="Cancel").click()
        expect(running.get_by_role("status")).to_contain_text("cancelled")
    finally:
        for content_id in ids:
            server.http.post(f"{CONTENT}/{content_id}/cancel")
    assert server.http.get(f"{CONTENT}/{ids[-1]}").json()["status"] == "cancelled"


def test_a_401_asks_for_an_api_key_kept_for_the_tab_and_sent_as_bearer(page):
    # The server's side of API keys is another module's; here the browser sees what such a server answers.
    seen = []

    def keyed(route):
        auth = route.request.headers.get("authorization")
        seen.append(auth)
        if auth != "Bearer k-123":
            body = '{"error": {"code": "unauthorized", "message": "an API key is required", "hint": "h"}}'
            return route.fulfill(status=401, content_type="application/json", body=body)
        return route.continue_()

    page.route("**/api/v1/**", keyed)
    page.goto(page.base + "/")
    page.get_by_label("API key").fill("k-123")
    page.get_by_role("button", name="Use key").click()
    expect(page.get_by_label("Model")).to_contain_text("smollm2-135m-instruct")  # the models loaded with the key
    assert seen[0] is None and seen[-1] == "Bearer k-123"
    assert page.evaluate("sessionStorage.getItem('genforge.apiKey')") == "k-123"
    assert page.evaluate("localStorage.length") == 0, "the key is kept for this tab only"


def test_a_record_survives_a_server_restart_and_is_still_shown(browser, server):
    rec = create(server, text_body("Name a mountain.", max_tokens=8))
    server.stop()
    again = Server(server.data_dir).start()
    try:
        again.wait_ready()
        pg = browser.new_page()
        pg.goto(f"{again.http.base_url}/#/history")
        expect(pg.locator(f"a[href*='{rec['id']}']")).to_have_count(1)
        pg.locator(f"a[href*='{rec['id']}']").click()
        expect(pg.locator("pre.text-out")).to_have_text(rec["text"])
        pg.close()
    finally:
        again.stop()
