"""The experiment report in a real browser: it renders, every image loads, the console stays clean.

Drives headless Chromium (``.ci/run`` installs it; the test skips where it is missing). The page is
opened twice: once as written, for a screenshot and the browser's console log; once with a probe
script injected at the top of ``<head>`` that records script errors, failed resource loads and
``console.error`` calls, and after ``load`` writes each image's ``naturalWidth`` into the DOM,
which ``--dump-dom`` returns.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from test_experiment import PNG, fake_analysis, fake_eval_metrics

pytestmark = pytest.mark.browser

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]

PROBE = """<script>
window.__mosrErrors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  window.__mosrErrors.push(t && t !== window ? "failed to load <" + t.tagName + "> " + String(t.src || t.href).slice(0, 80) : String(e.message));
}, true);
(function () { var orig = console.error; console.error = function () {
  window.__mosrErrors.push(Array.prototype.join.call(arguments, " ")); orig.apply(console, arguments); }; })();
window.addEventListener("load", function () {
  var imgs = Array.prototype.map.call(document.images, function (i) {
    return {alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}; });
  var out = document.createElement("pre");
  out.id = "mosr-probe";
  out.textContent = JSON.stringify({images: imgs, errors: window.__mosrErrors,
    headings: Array.prototype.map.call(document.querySelectorAll("h1,h2"), function (h) { return h.textContent; }),
    tables: document.querySelectorAll("table").length, bodyHeight: document.body.scrollHeight});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(binary: str, args: list[str], profile: Path, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=timeout)


def synthetic_report(folder: Path) -> Path:
    from mosr.report import write_report

    records: list[dict[str, Any]] = []
    for method in ("undefended", "refusal-sft", "rr", "mosr", "mosr-no-oalw", "mosr-no-caa"):
        analysis_dir = folder / "analysis" / method
        analysis_dir.mkdir(parents=True)
        (analysis_dir / "pca.png").write_bytes(PNG)
        (analysis_dir / "curves-compare.png").write_bytes(PNG)
        records.append({"method": method, "label": method, "seed": 0, "sweep_param": None, "sweep_value": None,
                        "eval_metrics": fake_eval_metrics(method), "analysis": fake_analysis(method != "undefended"),
                        "analysis_dir": str(analysis_dir)})
    for value in (2.0, 20.0):
        records.append({"method": "mosr", "label": f"mosr alpha={value:g}", "seed": 0, "sweep_param": "alpha", "sweep_value": value,
                        "eval_metrics": fake_eval_metrics("rr" if value > 10 else "mosr", 1)})
    return write_report(records, folder / "report", title="synthetic experiment", config={"model": "default"})


@pytest.fixture(scope="module")
def browser() -> str:
    binary = chromium()
    if binary is None:
        pytest.skip("headless Chromium not found (install the 'chromium' package; .ci/run does)")
    return binary


def test_report_renders_with_all_images_and_a_clean_console(tmp_path, browser):
    page = synthetic_report(tmp_path)
    n_images = len(re.findall(r"<img ", page.read_text()))
    assert n_images >= 6

    shot = tmp_path / "report-screenshot.png"
    plain = run_chromium(browser, ["--enable-logging=stderr", "--v=0", "--window-size=1280,2400", f"--screenshot={shot}",
                                   page.as_uri()], tmp_path / "profile-a")
    assert shot.is_file() and shot.stat().st_size > 10_000, plain.stderr[-2000:]
    console = [line for line in plain.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # the report has no scripts: any console message is a problem
    keep = os.environ.get("MOSR_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(keep) / shot.name)

    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    dom = run_chromium(browser, ["--virtual-time-budget=15000", "--dump-dom", probed.as_uri()], tmp_path / "profile-b")
    m = re.search(r'<pre id="mosr-probe">(.*?)</pre>', dom.stdout, re.S)
    assert m, f"probe did not run: {dom.stderr[-2000:]}"
    result = json.loads(html.unescape(m.group(1)))
    assert result["errors"] == []
    assert len(result["images"]) == n_images
    broken = [img["alt"] for img in result["images"] if not (img["complete"] and img["width"] > 0)]
    assert broken == []
    assert "How to read this" in result["headings"] and "Results" in result["headings"] and "Ablations" in result["headings"]
    assert result["tables"] >= 5 and result["bodyHeight"] > 2000
