"""index.html in a real headless browser: its script runs, nothing from a run executes, and each feature works.

The sweep is written on disk as Hydra and nst_exp write one (``.hydra/``, metrics.json,
result.png, inputs/, snapshots/, multirun.yaml), without running a job, so these tests take
seconds. Chromium (``--dump-dom``) prints the page after its script ran; a feature that needs a
click is opened through the URL's fragment, which the page honours (``#compare=0,1``).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
import yaml
from conftest import pattern_image

from nst_exp.report import Sweep, read_sweep
from nst_exp.report.gallery import CURVE_COLOURS, curve_key, swept_cell, write_gallery
from nst_exp.report.gallery_page import script_json

CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
                None)
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium): "
                                                            "the page's script cannot be run")

PAYLOAD = """<img src=x onerror="document.title='pwned'">"""
SCRIPT_PAYLOAD = "</script><script>document.title='pwned'</script>"
EVIL_METRIC = f"eval/{PAYLOAD}"
BETAS = ("1e3", "1e4", "1e5")


def fake_ratio_sweep() -> Sweep:
    """Two jobs over a config group whose ratios differ: each label is the option and its alpha/beta."""
    jobs = pd.DataFrame({"job": [0, 1], "dir": ["0", "1"], "style": ["the_scream", "starry_night"],
                         "status": "completed", "alpha/beta": [1e-7, 1e-6]})
    settings = {0: {"alpha": 1.0, "beta": 1e7}, 1: {"alpha": 1.0, "beta": 1e6}}
    choices = {0: {"style": "the_scream"}, 1: {"style": "starry_night"}}
    return Sweep(Path("."), jobs, pd.DataFrame(columns=["job", "tag", "step", "value"]), ["style"], settings, choices)


def write_job(root: Path, num: int, overrides: list[str], config: dict, metrics: dict | None,
              snapshots: int = 0) -> Path:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    hydra = {"hydra": {"job": {"num": num}, "runtime": {"choices": {"style": "the_scream"}},
                       "overrides": {"task": overrides}}}
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
        if metrics["status"] == "completed":
            pattern_image(job / "result.png", (40, 32), seed=num)
    (job / "inputs").mkdir()
    pattern_image(job / "inputs" / "content.png", (40, 32), seed=10)
    pattern_image(job / "inputs" / "style.png", (32, 40), seed=11)
    (job / "snapshots").mkdir()
    for step in range(1, snapshots + 1):
        pattern_image(job / "snapshots" / f"iter_{step * 10:06d}.png", (20, 16), seed=100 + step)
    return job


@pytest.fixture(scope="module")
def hostile_sweep(tmp_path_factory) -> Path:
    """beta=1e3,1e4,1e5 x a text key holding markup; one failed job; a metric key that is markup; beta = 0 nowhere,
    but alpha = 0 throughout, so loss/content is 0 for every job. 12 snapshots per job."""
    root = tmp_path_factory.mktemp("gallery") / "sw<i>eep"
    (root).mkdir()
    task = [f"beta={','.join(BETAS)}", f'+note="{SCRIPT_PAYLOAD}"']
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": task}}}))
    for num, beta in enumerate(BETAS):
        typed = float(beta)
        config = {"alpha": 0.0, "beta": typed, "content_layers": ["relu4_2"], "style_layers": ["relu1_1"],
                  "init": {"kind": "content"}, "images_dir": "images", "content": {"path": "c.png"},
                  "style": {"path": "s.png"}, "note": SCRIPT_PAYLOAD + str(num)}
        overrides = [f"beta={typed}", f'+note="{SCRIPT_PAYLOAD}{num}"']
        if num == 2:
            metrics = {"status": "failed", "message": f"boom {SCRIPT_PAYLOAD} {PAYLOAD}"}
        else:
            metrics = {"status": "completed", "loss/total": 1.0 + num, "loss/content": 0.0, "loss/style": 1.0 + num,
                       EVIL_METRIC: 0.5 + num, "eval/content_ssim": 0.25 * (num + 1)}
        write_job(root, num, overrides, config, metrics, snapshots=12)
    return root


@pytest.fixture(scope="module")
def page(hostile_sweep, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "report"
    write_gallery(read_sweep(hostile_sweep), out)
    return out / "index.html"


class Dom(HTMLParser):
    """Elements of a dumped page: (tag, attributes, text directly inside), and the title."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None], list[str]]] = []
        self.parents: list[int | None] = []
        self.stack: list[int] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.parents.append(self.stack[-1] if self.stack else None)
        self.elements.append((tag, dict(attrs), []))
        if tag not in ("img", "input", "br", "wbr", "meta"):
            self.stack.append(len(self.elements) - 1)

    def handle_endtag(self, tag):
        while self.stack:
            if self.elements[self.stack.pop()][0] == tag:
                break

    def handle_data(self, data):
        if self.stack:
            self.elements[self.stack[-1]][2].append(data)

    def find(self, tag: str | None = None, **attributes: str) -> list[tuple[str, dict, list[str]]]:
        return [element for element in self.elements if (tag is None or element[0] == tag)
                and all(element[1].get(name.replace("_", "-")) == value for name, value in attributes.items())]

    def viewer_images(self) -> list[str]:
        """The src of each picture the full-size viewer shows."""
        viewer = next(index for index, element in enumerate(self.elements) if element[1].get("id") == "viewer")

        def inside(index: int | None) -> bool:
            while index is not None and index != viewer:
                index = self.parents[index]
            return index == viewer

        return [element[1]["src"] for index, element in enumerate(self.elements)
                if element[0] == "img" and inside(index)]

    def text(self, **attributes: str) -> str:
        return "".join(self.find(**attributes)[0][2])

    @property
    def title(self) -> str:
        return "".join(self.find("title")[0][2])


def browse(page: Path, fragment: str = "") -> Dom:
    """The page's DOM after its script ran in headless Chromium, opened from disk (no server)."""
    profile = page.parent.parent / f"profile{abs(hash(fragment))}"
    result = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
         "--virtual-time-budget=2000", "--dump-dom", page.as_uri() + fragment],
        capture_output=True, text=True, timeout=90)
    assert result.returncode == 0 and "</html>" in result.stdout, result.stderr[-2000:]
    dom = Dom(result.stdout)
    assert dom.find("body", data_ready="true"), "the page's script did not run to its end"
    return dom


class Browser:
    """Headless Chromium driven through the DevTools protocol on a pipe (no driver, no network port):
    the page opened from disk, JavaScript evaluated in it, so a test clicks and types as a person does."""

    def __init__(self, page: Path, profile: Path) -> None:
        to_browser_read, to_browser_write = os.pipe()
        from_browser_read, from_browser_write = os.pipe()

        def descriptors() -> None:  # the protocol's pipe is the browser's fd 3 (in) and fd 4 (out)
            read, write = os.dup(to_browser_read), os.dup(from_browser_write)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", page.as_uri()],
            preexec_fn=descriptors, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self.write, self.read, self.buffer, self.count = to_browser_write, from_browser_read, b"", 0
        target = next(info for info in self.call("Target.getTargets")["targetInfos"] if info["type"] == "page")
        self.session = self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
        self.wait_for("document.body && document.body.dataset.ready === 'true'")

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.count += 1
        message = {"id": self.count, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(self.write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            while b"\0" not in self.buffer:
                assert select.select([self.read], [], [], max(0.0, deadline - time.monotonic()))[0], f"no reply to {method}"
                chunk = os.read(self.read, 1 << 16)
                assert chunk, "the browser closed the pipe"
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.count:
                assert "error" not in reply, reply
                return reply["result"]

    def js(self, expression: str):
        """The value of ``expression`` in the page; a script error fails the test."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, self.session)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while not self.js(f"Boolean({expression})"):
            assert time.monotonic() < deadline, f"never true: {expression}"
            time.sleep(0.05)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        os.close(self.write)
        os.close(self.read)


def test_json_in_a_script_element_cannot_end_it():
    text = script_json({"a": SCRIPT_PAYLOAD + "<!-- \u2028 &"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": SCRIPT_PAYLOAD + "<!-- \u2028 &"}


@needs_browser
def test_strings_from_a_run_are_shown_as_text_and_nothing_runs(page, hostile_sweep):
    dom = browse(page, "#compare=0,1")
    assert dom.title == "Sweep " + f"{hostile_sweep.parent.name}/sw<i>eep"  # not 'pwned', and the name kept
    assert not dom.find("img", src="x") and not dom.find("i")  # no element made from a run's text
    assert len(dom.find("script")) == 2  # the data block and the page's own script, nothing injected
    headers = ["".join(element[2]) for element in dom.find("th")]
    assert EVIL_METRIC in headers  # the metric key shown as the text it is
    source = page.read_text()
    assert SCRIPT_PAYLOAD not in source and PAYLOAD not in source
    assert "&lt;/script&gt;&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in source  # the note
    rows = dom.find("tr", data_job="2")
    assert SCRIPT_PAYLOAD in rows[0][1]["data-search"]  # the failed job's message, kept as text
    captions = [text for element in dom.find("figcaption") for text in element[2]]
    assert captions and all(SCRIPT_PAYLOAD in caption for caption in captions)  # viewer: text via textContent


@needs_browser
def test_the_curve_key_has_colours_a_browser_reads_and_a_zero_term_is_not_shown(page, hostile_sweep):
    sweep = read_sweep(hostile_sweep)
    sweep.scalars = pd.DataFrame([{"job": job, "tag": tag, "step": 1, "value": value} for job in (0, 1)
                                  for tag, value in (("loss/total", 2.0), ("loss/content", 0.0), ("loss/style", 2.0))])
    key = curve_key(sweep)
    assert re.findall(r"color: (#[0-9a-f]{6})", key) == [CURVE_COLOURS["loss/total"], CURVE_COLOURS["loss/style"]]
    assert "content" not in key  # alpha = 0 throughout: no content curve was drawn
    headers = ["".join(element[2]) for element in browse(page).find("th")]
    assert "loss/total" in headers and "loss/style" in headers and "loss/content" not in headers


@needs_browser
def test_the_swept_beta_shows_the_value_typed_whole(page):
    dom = browse(page)
    cells = [element for element in dom.find("td") if (element[1].get("title") or "").startswith("beta=")]
    assert [element[1]["title"] for element in cells] == [f"beta={beta}" for beta in BETAS]
    shown = [element for element in dom.find("span", **{"class": "nowrap"}) if element[2] and element[2][0] in BETAS]
    assert [element[2][0] for element in shown] == list(BETAS)  # 1e3, not 1000.0 nor alpha/beta
    assert ".nowrap { white-space: nowrap; }" in page.read_text()
    sweep = fake_ratio_sweep()
    cell, _ = swept_cell(sweep, "style", 0, {})
    assert '<span class="nowrap">alpha/beta = 1e-7</span>' in cell  # a config group's label: option, then ratio


@needs_browser
def test_a_result_opens_full_size_and_two_compare_side_by_side_or_blinking(page):
    dom = browse(page)
    assert dom.find("div", id="viewer", hidden="")  # closed until asked
    assert dom.text(id="compare").startswith("Compare: pick 2 more")
    viewed = browse(page, "#view=1")
    assert not viewed.find("div", id="viewer", hidden="")
    sweep = f"../../{page.parent.parent.name.replace('out', 'gallery')}/sw%3Ci%3Eeep"
    assert viewed.viewer_images() == [f"{sweep}/1/result.png"]
    side = browse(page, "#compare=1,0")
    assert side.viewer_images() == [f"{sweep}/1/result.png", f"{sweep}/0/result.png"]
    assert side.text(id="mode") == "blink" and side.text(id="compare") == "Compare jobs 1 and 0"
    assert [element[1]["data-job"] for element in side.find("tr", **{"class": "picked"})] == ["0", "1"]
    blink = browse(page, "#compare=0,1&blink")
    shown = blink.find("figure")
    assert len(shown) == 1 and shown[0][1]["data-showing"] in ("0", "1")  # one place, the two in turn
    assert blink.viewer_images()[0] in (f"{sweep}/0/result.png", f"{sweep}/1/result.png")
    assert blink.text(id="mode") == "side by side"
    failed = browse(page, "#compare=0,2")  # job 2 has no result: nothing to compare
    assert failed.find("div", id="viewer", hidden="")


@needs_browser
def test_the_filter_box_hides_rows_without_every_word(page):
    dom = browse(page, "#filter=beta%3D1e4%20completed")
    hidden = {element[1]["data-job"]: "hidden" in element[1] for element in dom.find("tr") if "data-job" in element[1]}
    assert hidden == {"0": True, "1": False, "2": True}
    assert dom.text(id="shown") == "1 of 3 jobs shown"
    assert dom.find("input", id="filter")[0][1].get("value") is None  # typed text lives in .value, not markup
    everything = browse(page, "#filter=")
    assert everything.text(id="shown") == "3 of 3 jobs shown"


VIEWER = "Array.from(document.querySelectorAll('#viewer img')).map((img) => img.getAttribute('src'))"


@needs_browser
def test_clicks_open_a_result_full_size_compare_two_and_blink(page, tmp_path):
    browser = Browser(page, tmp_path / "profile")
    try:
        sweep = browser.js("document.querySelector('tr[data-job=\"1\"] a.zoom').getAttribute('href')")
        assert sweep.endswith("/1/result.png")
        browser.js("document.querySelector('tr[data-job=\"1\"] a.zoom').click()")  # a click, not the link
        assert browser.js("document.getElementById('viewer').hidden") is False
        assert browser.js(VIEWER) == [sweep] and browser.js("location.pathname").endswith("index.html")
        browser.js("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")
        assert browser.js("document.getElementById('viewer').hidden") is True

        browser.js("document.querySelector('input.pick[data-job=\"1\"]').click()")
        assert browser.js("document.getElementById('compare').disabled") is True  # one picked
        browser.js("document.querySelector('input.pick[data-job=\"0\"]').click()")
        browser.js("document.getElementById('compare').click()")
        browser.wait_for("document.querySelectorAll('#viewer img').length === 2")
        assert browser.js(VIEWER) == [sweep, sweep.replace("/1/", "/0/")]  # in the order picked
        browser.js("document.getElementById('mode').click()")  # blink
        browser.wait_for("document.querySelectorAll('#viewer img').length === 1")
        first = browser.js(VIEWER)
        browser.wait_for(f"{VIEWER}[0] !== {json.dumps(first[0])}", seconds=5)  # the other one, in the same place
        assert {first[0], browser.js(VIEWER)[0]} == {sweep, sweep.replace("/1/", "/0/")}
        browser.js("document.getElementById('close').click()")
        assert browser.js("document.getElementById('viewer').hidden") is True

        browser.js("const box = document.getElementById('filter'); box.value = 'FAILED boom';"
                   "box.dispatchEvent(new Event('input'))")
        assert browser.js("Array.from(document.querySelectorAll('tbody tr')).filter((row) => !row.hidden)"
                          ".map((row) => row.dataset.job)") == ["2"]
        browser.js("document.querySelector('thead th:nth-child(2)').click();"
                   "document.querySelector('thead th:nth-child(2)').click()")  # job, descending
        assert browser.js("Array.from(document.querySelectorAll('tbody tr')).map((row) => row.dataset.job)") \
            == ["2", "1", "0"]
        assert browser.js("document.title").startswith("Sweep ")
    finally:
        browser.close()


@needs_browser
def test_a_ratio_label_stays_on_one_line_in_a_narrow_window(tmp_path):
    sweep = fake_ratio_sweep()
    sweep.root = tmp_path / "sweep"
    write_gallery(sweep, tmp_path / "out")
    browser = Browser(tmp_path / "out" / "index.html", tmp_path / "profile")
    try:
        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": 320, "height": 600, "deviceScaleFactor": 1, "mobile": False}, browser.session)
        lines = browser.js("Array.from(document.querySelectorAll('td span.nowrap'))"
                           ".filter((span) => span.textContent.startsWith('alpha/beta'))"
                           ".map((span) => [span.textContent, span.getClientRects().length])")
        assert lines == [["alpha/beta = 1e-7", 1], ["alpha/beta = 1e-6", 1]]  # not "1e-" / "7"
    finally:
        browser.close()


def test_each_job_shows_its_snapshots_as_a_strip_evenly_spaced_to_the_last(page):
    strips = re.findall(r'<div class="strip">(.*?)</div>', page.read_text())
    assert len(strips) == 3
    iterations = re.findall(r'iter_0*(\d+)\.png"', strips[0])
    assert [int(n) for n in iterations[::2]] == [10, 30, 40, 60, 70, 90, 100, 120]  # 8 of 12, first and last


def test_a_self_contained_gallery_carries_the_inputs_and_the_strip(hostile_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(hostile_sweep, sweep)
    out = tmp_path / "published"
    write_gallery(read_sweep(sweep), out, self_contained=True)
    shutil.rmtree(sweep)
    text = (out / "index.html").read_text()
    links = set(re.findall(r'(?:href|src)="([^"]+)"', text))
    assert {"jobs/0/inputs/content.png", "jobs/0/inputs/style.png"} <= links  # shown above the table
    assert "jobs/1/snapshots/iter_000120.png" in links
    for link in links:
        assert (out / unquote(link)).exists() and not link.startswith(".."), link  # all inside the folder
    assert len(list((out / "jobs" / "0" / "snapshots").iterdir())) == 8  # only those the strip shows


def test_the_page_carries_its_stylesheet(page):
    from nst_exp.report.gallery_page import CSS

    style = re.search(r"<style>(.*?)</style>", page.read_text(), re.S).group(1)
    assert style == CSS and ".strip" in style  # without a browser: the rules the page's classes need are there
