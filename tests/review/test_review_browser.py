"""The blind review page in a real browser: Debian's headless Chromium driven by chromedriver
(selenium). A reviewer opens an invite link, votes through five items with the keyboard,
reloads and finds the progress kept, goes back with the arrow key and changes a vote; model
outputs carrying script payloads stay inert text; a phone-width window stacks the answers.

Needs the `tunelab` binary (TUNELAB_BIN, else $CARGO_TARGET_DIR/release/tunelab), Debian's
chromium and chromium-driver (scripts/test installs them). Never skips.
"""
import json
import os
import pathlib
import shutil
import subprocess
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

PAYLOADS = [
    "<script>document.body.setAttribute('data-pwned','script')</script>",
    "\"><img src=x onerror=\"document.body.setAttribute('data-pwned','img')\">",
    "</pre><svg onload=\"document.body.setAttribute('data-pwned','svg')\"></svg>",
]

LONG_LINE = "https://example.com/" + "a" * 200


def tunelab_bin():
    explicit = os.environ.get("TUNELAB_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or str(pathlib.Path.home() / ".cache/tunelab/target")
    path = pathlib.Path(target) / "release" / "tunelab"
    assert path.exists(), f"{path} is missing: build with `cargo build --release --workspace` (scripts/test does)"
    return str(path)


def tunelab(*args):
    out = subprocess.run([tunelab_bin(), *map(str, args)], capture_output=True, text=True)
    assert out.returncode == 0, f"tunelab {args} failed:\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    d = tmp_path_factory.mktemp("review-browser")
    (d / "rubric.toml").write_text('name = "r"\n[[checks]]\nname = "len"\nscorer = "length"\nmin_chars = 1\n')
    n = 8
    (d / "cases.jsonl").write_text("".join(json.dumps({"id": f"c{i}", "instruction": f"Question {i} {PAYLOADS[i % 3]}", "output": f"ref {i}"}) + "\n" for i in range(n)))
    (d / "suite.toml").write_text('name = "b"\nrubric = "rubric.toml"\n[[sets]]\ncategory = "heldout"\ncases = "cases.jsonl"\n')
    runs = []
    for name, prefix in [("browser-run-one", "first says"), ("browser-run-two", "second says")]:
        # Every answer also holds one long unbreakable line, which must wrap on a phone.
        (d / f"{name}.jsonl").write_text("".join(json.dumps({"id": f"c{i}", "output": f"{prefix} {i} {PAYLOADS[i % 3]} {LONG_LINE}"}) + "\n" for i in range(n)))
        tunelab("eval", "run", "--suite", d / "suite.toml", "--predictions", d / f"{name}.jsonl", "--out", d, "--name", name)
        runs.append(d / name)
    study = d / "study"
    tunelab("review", "new", "--runs", *runs, "--show-reference", "--out", study)
    server = subprocess.Popen([tunelab_bin(), "serve", "--study", str(study), "--addr", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    base = next(w for w in line.split() if w.startswith("http://"))
    links = [tunelab("review", "invite", study, "--reviewer", who, "--base-url", base).strip() for who in ("ana", "ben")]
    yield {"base": base, "links": links, "study": study, "dir": d}
    server.kill()
    server.wait()


@pytest.fixture()
def browser(tmp_path):
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "chromium and chromium-driver are not installed: run scripts/test (it installs Debian's packages)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def progress(driver):
    return driver.find_element(By.ID, "progress").text


def wait_for(driver, condition, what):
    WebDriverWait(driver, 15).until(lambda d: condition(d), message=what)


def press(driver, key):
    driver.find_element(By.TAG_NAME, "body").send_keys(key)


def test_keyboard_voting_survives_a_reload_and_outputs_stay_inert(service, browser):
    browser.get(service["links"][0])
    wait_for(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", "the page loaded its first item")
    assert progress(browser) == "0 / 8"
    shown = []
    for k in range(5):
        prompt = browser.find_element(By.ID, "prompt").text
        shown.append(prompt)
        press(browser, "1234"[k % 4])
        wait_for(browser, lambda d, k=k: progress(d) == f"{k + 1} / 8", f"progress after vote {k + 1}")
    assert len(set(shown)) == 5, "each vote moved on to a new item"

    # Reload: the progress is kept and the item shown is a new one.
    browser.refresh()
    wait_for(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", "the page reloaded")
    assert progress(browser) == "5 / 8"
    assert browser.find_element(By.ID, "prompt").text not in shown

    # Back with the left arrow: the latest voted item, its vote highlighted; change it.
    press(browser, Keys.ARROW_LEFT)
    wait_for(browser, lambda d: d.find_element(By.ID, "prompt").text == shown[4], "the previous item")
    chosen = [b.get_attribute("data-choice") for b in browser.find_elements(By.CSS_SELECTOR, "button.chosen")]
    assert chosen == ["left"], chosen  # the fifth vote was key 1 (k = 4)
    press(browser, "3")
    wait_for(browser, lambda d: d.find_element(By.ID, "prompt").text not in shown[4:], "moved on after changing the vote")
    assert progress(browser) == "5 / 8", "a changed vote is not a new item"

    # The payloads are visible as text and none ran.
    body = browser.find_element(By.TAG_NAME, "body")
    assert body.get_attribute("data-pwned") is None
    texts = " ".join(browser.find_element(By.ID, i).get_attribute("textContent") for i in ("prompt", "left", "right", "reference"))
    assert any(p in texts for p in PAYLOADS), texts
    assert browser.execute_script("return document.querySelectorAll('main script, main img, main svg').length") == 0


def test_a_phone_width_screen_stacks_the_answers(service, browser):
    browser.set_window_size(390, 844)
    browser.get(service["links"][1])
    wait_for(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", "the page loaded")
    left = browser.find_element(By.ID, "left").rect
    right = browser.find_element(By.ID, "right").rect
    assert right["y"] > left["y"] + left["height"] - 1, (left, right)
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400, f"the page scrolls sideways on a phone ({width} px)"


def test_without_a_token_the_page_shows_nothing_of_the_study(service, browser):
    browser.get(service["base"] + "/review")
    wait_for(browser, lambda d: "review link" in d.find_element(By.ID, "message").text, "the page asks for a link")
    assert "Question" not in browser.page_source
