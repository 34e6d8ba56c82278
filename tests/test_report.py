"""``reslab report``: one self-contained HTML page, rendered by headless Chromium with no
console errors, every section present and every inlined image decoded."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from test_evaluate_helpers import copy_run, digits_run, torch_threads

from reslab.cli.main import main

SECTIONS = ["model", "data", "training", "evaluation", "calibration", "top-losses", "config"]

# Injected into a copy of the report: collects errors and console.error calls, then writes
# what it saw (errors, images decoded or broken, section ids) into the DOM for --dump-dom.
PROBE = """<script>
window.__errs = [];
window.addEventListener('error', function (e) {
  window.__errs.push('error: ' + (e.message || (e.target && e.target.tagName) || 'unknown'));
}, true);
(function () {
  var orig = console.error;
  console.error = function () {
    window.__errs.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    return orig.apply(console, arguments);
  };
})();
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var out = document.createElement('pre');
  out.id = '__probe';
  out.textContent = JSON.stringify({
    errors: window.__errs,
    images: imgs.length,
    broken: imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length,
    sections: Array.prototype.map.call(document.querySelectorAll('section'),
                                       function (s) { return s.id; }),
    height: document.body.scrollHeight
  });
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):  # a tiny model: one thread is fastest, more only spin on a busy CPU
        yield


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = copy_run(digits_run(tmp_path_factory), tmp_path_factory.mktemp("report") / "run")
    with torch_threads(1):
        assert main(["report", str(run), "--top-losses", "6"]) == 0
    return run, run / "report.html"


def _chromium() -> str:
    names = ("chromium", "chromium-browser", "google-chrome")
    exe = next((p for p in map(shutil.which, names) if p), None)
    if exe is None:
        pytest.skip("chromium is not installed "
                    "(`make test` installs it via scripts/setup_system.sh)")
    return exe


def _headless(exe: str, *args: str, timeout: int = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [exe, "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run",
         "--disable-extensions", "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0",
         *args],
        capture_output=True, text=True, timeout=timeout,
    )


def test_report_is_self_contained_and_complete(report):
    run, path = report
    page = path.read_text(encoding="utf-8")
    # Nothing outside the file: no remote or local references, no scripts at all.
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", page)
    assert "<script" not in page and "@import" not in page and "url(" not in page
    for anchor in SECTIONS:
        assert f'id="{anchor}"' in page
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # training curves, confusion matrix, reliability diagram, 6 Grad-CAM overlays
    assert len(pngs) == 3 + 6
    # The evaluation it ran is saved in the run, and the page shows its numbers.
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert f"{100 * metrics['top1']:.2f}%" in page
    assert "Health check" in page and "no problems found" in page
    assert "resnet20" in page and "reslab train" in page  # model card: architecture, command


def test_report_renders_in_chromium_without_errors(report, tmp_path):
    exe = _chromium()
    _, path = report
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1),
                     encoding="utf-8")
    res = _headless(exe, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="__probe">(.*?)</pre>', res.stdout, re.S)
    assert found, f"chromium did not render the page (rc {res.returncode}): {res.stderr[-2000:]}"
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["errors"] == []
    assert seen["images"] == 9 and seen["broken"] == 0
    assert seen["sections"] == SECTIONS
    assert seen["height"] > 3000  # a real page, not an empty body
    console_errors = [ln for ln in res.stderr.splitlines()
                      if "Uncaught" in ln or ("CONSOLE" in ln and ":ERROR:" in ln)]
    assert console_errors == []


def test_report_screenshot_is_not_blank(report, tmp_path):
    exe = _chromium()
    _, path = report
    shot = tmp_path / "report.png"
    res = _headless(exe, "--hide-scrollbars", "--window-size=1280,2400",
                    f"--screenshot={shot}", path.as_uri())
    assert shot.exists(), f"no screenshot (rc {res.returncode}): {res.stderr[-2000:]}"
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1280, 2400)
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > 20  # text, plots and cards, not a blank page
    assert len(np.unique(arr.reshape(-1, 3)[::37], axis=0)) > 50
    top = arr[:100].reshape(-1, 3).mean(0)
    assert top[2] > top[0] + 40  # the blue header is there


def test_report_needs_a_run_folder(tmp_path_factory, tmp_path, capsys):
    ckpt = digits_run(tmp_path_factory) / "checkpoints" / "best.pt"
    shutil.copy(ckpt, tmp_path / "model.pt")
    assert main(["report", str(tmp_path / "model.pt")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_report_without_its_dataset_is_partial_not_fatal(tmp_path_factory, tmp_path):
    """A run whose training folder was deleted still gets a report: model card, curves and
    config, with the reason the data sections are missing."""
    import torch

    from reslab.files import save_checkpoint

    run = copy_run(digits_run(tmp_path_factory), tmp_path / "run")
    ckpt_path = run / "checkpoints" / "best.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["config"]["data"]["source"] = str(tmp_path / "deleted_photos")
    save_checkpoint(ckpt, ckpt_path)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "could not be used" in page and "deleted_photos" in page
    for anchor in ("model", "training", "evaluation", "config"):
        assert f'id="{anchor}"' in page
    assert 'id="top-losses"' not in page
    # Data given explicitly must work: its error is raised, not hidden in the page.
    assert main(["report", str(run), "--data", str(tmp_path / "nope")]) == 2
