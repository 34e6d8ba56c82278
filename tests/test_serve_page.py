"""The web page of ``reslab serve`` in real headless Chromium (Selenium + Debian's
chromedriver): pick an image, see the top-k bars and the Grad-CAM overlay, and keep a
screenshot among the test's artefacts. Skipped where Chromium or chromedriver is absent
(``scripts/setup_system.sh`` installs both)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from test_evaluate_helpers import digits_run, torch_threads

from reslab.data import load_dataset

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER.exists()),
    reason="needs chromium and chromium-driver (apt-get install chromium chromium-driver)",
)


def _browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", "--window-size=1100,1000"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def test_page_predicts_and_explains_an_uploaded_image(tmp_path_factory, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from reslab.serve import ServedModel, ServeSettings, create_app
    from reslab.serve.server import BackgroundServer

    with torch_threads(1):
        served = ServedModel.load(digits_run(tmp_path_factory))
    bundle = load_dataset("digits", log=None, check=False)
    label = str(int(bundle.test.labels[0]))
    image = tmp_path / "digit.png"
    Image.fromarray(bundle.test.images[0, 0].numpy()).resize((64, 64), Image.NEAREST).save(image)

    with torch_threads(1), BackgroundServer(create_app(served, ServeSettings())) as srv:
        browser = _browser()
        try:
            browser.get(srv.url + "/")
            wait = WebDriverWait(browser, 30)
            wait.until(EC.text_to_be_present_in_element((By.ID, "card-list"), "input size"))
            browser.find_element(By.ID, "file").send_keys(str(image))
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 5)
            wait.until(lambda b: b.find_element(By.ID, "gradcam").get_attribute("data-ready") == "1")
            wait.until(lambda b: b.execute_script(
                "const i = document.getElementById('gradcam'); return i.complete && i.naturalWidth"))
            bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
            labels = [b.get_attribute("data-label") for b in bars]
            widths = [float(b.find_element(By.CLASS_NAME, "fill").value_of_css_property("width")
                            .removesuffix("px")) for b in bars]
            status = browser.find_element(By.ID, "status").text
            card = browser.find_element(By.ID, "card-list").text
            shot = Path(os.environ.get("RESLAB_ARTIFACTS", tmp_path)) / "serve_page.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(shot))
        finally:
            browser.quit()
    assert labels[0] == label, (labels, status)  # the trained model reads the digit
    assert status.startswith(f"predicted: {label}")
    assert widths == sorted(widths, reverse=True) and widths[0] > 0
    assert "1 × 8 × 8" in card and "test_acc" in card
    png = Image.open(shot)
    assert png.size[0] > 500
    print(f"screenshot: {shot}")
