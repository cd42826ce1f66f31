"""report.html in a real browser: Debian's Chromium, driven through its chromedriver, over real
small gap runs of a tiny random checkpoint (3 demo items; eSpeak and Piper voices, Piper also
in white noise; both controls).

The run's page shows the figures of its results.json, its misaligned filter counts the items
items.jsonl says are misaligned, a clip plays to its full length, the console stays clean, and it
stays usable by keyboard and at 390 px wide. The comparison page of two runs (the second reads
with another text LLM, so its text@base and cascade answers flip) shows a flipped item. A clip
deleted from the store is named missing on a page written after, and the page still works.

Chromium is not optional here: `make test` installs it (apt), and a browser that cannot start
fails these tests. Screenshots land in each test's tmp folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait
from typer.testing import CliRunner

import salad_eval
from salad_eval.cli import app
from salad_eval.home import home
from salad_eval.page import write_run_page
from salad_eval.speech import store

pytestmark = pytest.mark.integration

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
VOICES = ("espeak/en-us", "piper/joe", "piper/joe+noise=white:snr=5")
RUN = {
    "tasks": ["demo"],
    "voices": ",".join(VOICES),
    "limit": 3,
    "asr": "whisper-tiny.en",
    "controls": True,
    "divergences": False,
    "n_boot": 200,
}


@pytest.fixture(scope="module")
def runs(random_checkpoint, tiny_qwen2, tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two gap runs (the second with another text LLM) and their cache home: the usual one, so
    a rerun of this file reuses its scores, transcripts and clips (the runs are the input here,
    the page the subject)."""
    root = tmp_path_factory.mktemp("page-runs")
    first, second = root / "run", root / "other-text-llm"
    salad_eval.evaluate(str(random_checkpoint), out=first, **RUN)
    salad_eval.evaluate(str(random_checkpoint), text_model=str(tiny_qwen2), out=second, **RUN)
    return first, second, home()


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM.is_file() and DRIVER.is_file(), (
        "Chromium is not installed: `make test` installs it (apt-get install chromium "
        "chromium-driver)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--mute-audio",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(DRIVER)))
    driver.set_script_timeout(120)  # a safety limit (a clip plays in well under a second)
    yield driver
    driver.quit()


def load(driver, page: Path) -> None:
    driver.set_window_size(1280, 1000)
    driver.get(page.resolve().as_uri())
    WebDriverWait(driver, 120).until(  # a safety limit: the page draws in well under a second
        lambda d: d.execute_script("return document.body.getAttribute('data-ready')") == "1",
        message=f"{page.name} never marked itself drawn (data-ready=1): did its script fail?",
    )


def errors(driver) -> list[dict]:
    """The console's errors since the last call (uncaught exceptions, failed loads)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def pts(fig: dict) -> str:
    """A figure as the page writes it: points with their interval, one decimal."""

    def one(x: float) -> str:
        text = f"{100 * x:.1f}"
        return "0.0" if text == "-0.0" else text

    return f"{one(fig['value'])} [{one(fig['ci_low'])}, {one(fig['ci_high'])}]"


def shown(driver, key: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f'[data-figure="{key}"]').get_attribute(
        "textContent"
    )


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "items.jsonl").read_text().splitlines()]


def heard(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "heard.jsonl").read_text().splitlines()]


def choose(driver, select_id: str, value: str) -> int:
    Select(driver.find_element(By.ID, select_id)).select_by_value(value)
    return int(driver.find_element(By.ID, "count").get_attribute("data-count"))


def listed(driver) -> list[str]:
    return [
        d.get_attribute("data-item") for d in driver.find_elements(By.CSS_SELECTOR, "#list details")
    ]


def open_item(driver, item: str):
    details = driver.find_element(By.CSS_SELECTOR, f'#list details[data-item="{item}"]')
    details.find_element(By.TAG_NAME, "summary").click()
    assert details.get_attribute("open") is not None
    return details


def test_the_run_page_in_chromium(runs, browser, tmp_path, monkeypatch):
    run, _, cache = runs
    results = json.loads((run / "results.json").read_text())
    load(browser, run / "report.html")

    # (a) the overview's figures are results.json's
    overall = results["metrics"][results["metric"]]["overall"]
    for part in ("gap", "forgetting", "misalignment", "cascade_gap"):
        assert shown(browser, part) == pts(overall[part]), part
    for condition, figure in overall["accuracy"].items():
        assert shown(browser, f"acc:{condition}") == pts(figure), condition
    for voice, table in results["metrics"][results["metric"]]["voices"].items():
        assert shown(browser, f"voice:{voice}:gap") == pts(table["gap"]), voice
    sentence = browser.find_element(By.ID, "controls").get_attribute("textContent")
    assert sentence == results["controls"]["sentence"]
    assert browser.find_element(By.ID, "count").text == "3 of 3 items"
    browser.save_screenshot(str(tmp_path / "overview.png"))

    # (b) the misaligned filter lists exactly the misaligned items of items.jsonl
    ok = {(r["item"], r["condition"], r["voice"]): r["correct"] for r in records(run)}
    misaligned = {
        item
        for item, _, _ in ok
        if ok[item, "text@speech", None] and any(not ok[item, "speech@speech", v] for v in VOICES)
    }
    assert choose(browser, "f-outcome", "misaligned") == len(misaligned)
    assert sorted(listed(browser)) == sorted(f"demo/{i}" for i in misaligned)
    assert browser.find_element(By.ID, "count").text == f"{len(misaligned)} of 3 items"
    assert choose(browser, "f-outcome", "all") == 3

    # (c) a clip plays to the end of its data, as long as the stored clip
    first = heard(run)[0]
    details = open_item(browser, f"demo/{first['item']}")
    players = details.find_elements(By.CSS_SELECTOR, "audio[data-clip]")
    assert len(players) == len(VOICES) * 3  # per voice: its clip, the silent and shuffled ones
    clip = players[0].get_attribute("data-clip")
    (key,) = {c["key"] for c in first["voices"][VOICES[0]]["clips"] if c["sha256"][:16] == clip}
    monkeypatch.setenv("SALAD_HOME", str(cache))
    seconds = sf.info(store.clip_path(key)).frames / 16000
    state = browser.execute_async_script(
        """
        const [audio, done] = arguments;
        audio.muted = true;
        audio.play().then(() => {
          const poll = setInterval(() => {
            if (audio.readyState >= 4 && audio.currentTime > 0) {
              clearInterval(poll);
              audio.pause();
              done({ready: audio.readyState, duration: audio.duration, at: audio.currentTime});
            }
          }, 20);
        }, (err) => done({error: String(err)}));
        """,
        players[0],
    )
    assert state.get("ready") == 4, state  # HAVE_ENOUGH_DATA
    assert abs(state["duration"] - seconds) <= 0.01 * seconds, (state, seconds)
    assert state["at"] > 0
    for audio in players:
        assert audio.get_attribute("aria-label")

    # keyboard and labels: every filter has its label; an item opens with Enter
    for field in browser.find_elements(By.CSS_SELECTOR, "#filters select, #filters input"):
        label = browser.find_elements(By.CSS_SELECTOR, f'label[for="{field.get_attribute("id")}"]')
        assert label and label[0].text, field.get_attribute("id")
    summary = browser.find_elements(By.CSS_SELECTOR, "#list details summary")[1]
    summary.send_keys(Keys.ENTER)
    assert summary.find_element(By.XPATH, "..").get_attribute("open") is not None

    # (e) screenshots: the filtered list with an item open, and the page at 390 px
    choose(browser, "f-outcome", "misaligned")
    if misaligned:
        open_item(browser, listed(browser)[0])
    browser.execute_script("document.getElementById('items').scrollIntoView()")
    browser.save_screenshot(str(tmp_path / "misaligned.png"))
    phone = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", phone)  # below a window's least
    width = browser.execute_script(
        "return [window.innerWidth, document.documentElement.scrollWidth, "
        "document.documentElement.clientWidth]"
    )
    assert width[0] == 390 and width[1] <= width[2], width  # no sideways page scroll (tables do)
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(tmp_path / "narrow.png"))
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    for name in ("overview.png", "misaligned.png", "narrow.png"):
        assert (tmp_path / name).stat().st_size > 10_000

    # (d) no error in the console
    assert errors(browser) == []


def test_the_comparison_page_shows_a_flipped_item(runs, browser, tmp_path):
    first, second, _ = runs
    out = tmp_path / "comparison"
    res = CliRunner().invoke(
        app, ["report", str(first), str(second), "--out", str(out), "--n-boot", "200"]
    )
    assert res.exit_code == 0, res.output
    a = {(r["item"], r["condition"], r["voice"]): r["correct"] for r in records(first)}
    b = {(r["item"], r["condition"], r["voice"]): r["correct"] for r in records(second)}
    flipped = sorted((k for k in a if k in b and a[k] != b[k]), key=str)
    assert flipped, "the two runs answer alike everywhere: no flip to show"
    item, condition, voice = flipped[0]

    load(browser, out / "report.html")
    paired = json.loads((out / "comparison.json").read_text())["paired"]
    caption = "Each other run (b) against the first (a)"
    table = browser.find_element(By.XPATH, f"//table[caption[starts-with(., '{caption}')]]")
    assert len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) == len(paired)
    expected = {i for i, c, _ in flipped if c == condition}
    assert choose(browser, "f-flip", condition) == len(expected)
    assert sorted(listed(browser)) == sorted(f"demo/{i}" for i in expected)
    details = open_item(browser, f"demo/{item}")
    rows = details.find_elements(By.CSS_SELECTOR, f'tr.flip[data-flip="{condition}"]')
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert any(c[0] == (voice or "–") and "flipped" in c[-1] for c in cells), cells
    browser.execute_script("arguments[0].scrollIntoView()", rows[0])
    browser.save_screenshot(str(tmp_path / "comparison.png"))
    # content-addressed: the runs heard the same clips, copied once for both
    ids = {
        c["sha256"][:16] for row in heard(first) for v in row["voices"].values() for c in v["clips"]
    }
    assert ids <= {p.stem for p in (out / "audio").iterdir()}
    assert errors(browser) == []


def test_a_clip_deleted_from_the_store_is_named_missing(runs, browser, tmp_path, monkeypatch):
    run, _, cache = runs
    rows = heard(run)
    monkeypatch.setenv("SALAD_HOME", str(cache))
    keys = {c["key"] for row in rows for v in row["voices"].values() for c in v["clips"]}
    paths = {key: store.clip_path(key) for key in keys}
    lost = rows[0]["voices"][VOICES[1]]["clips"][0]
    own = tmp_path / "home"  # the run's store with one clip deleted (the shared one stays whole)
    monkeypatch.setenv("SALAD_HOME", str(own))
    for key, path in paths.items():
        if key != lost["key"]:
            store.clip_path(key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, store.clip_path(key))
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("audio", "report.html"))
    write_run_page(copy)

    load(browser, copy / "report.html")
    details = open_item(browser, f"demo/{rows[0]['item']}")
    (missing,) = details.find_elements(By.CSS_SELECTOR, ".player.missing")
    assert missing.get_attribute("data-missing") == lost["sha256"][:16]
    assert "Clip missing: missing from the audio store" in missing.text
    assert VOICES[1] in missing.text
    assert len(details.find_elements(By.CSS_SELECTOR, "audio[data-clip]")) == len(VOICES) * 3 - 1
    assert shown(browser, "gap")  # the rest of the page is drawn
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", missing)
    browser.save_screenshot(str(tmp_path / "missing.png"))
    assert errors(browser) == []
