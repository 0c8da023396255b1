"""End to end in headless Chromium: upload a phantom, predict, move the sliders, see the overlay and volumes.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them);
skipped with a message when they are absent.  Set ``KIDNEYSEG_VIEWER_SCREENSHOT``
to a path to keep a copy of the screenshot (docs/images/viewer_example.png is made so).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "reporting"))
from live_server import TOKEN, live_server
from phantom_case import phantom
from tiny_model import shared_tiny_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="Debian's chromium and chromium-driver are not installed "
                              "(apt-get install chromium chromium-driver; `make test` does it)"),
]


@pytest.fixture
def driver(tmp_path: Path):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--window-size=1400,1000"):
        opts.add_argument(flag)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(30)
    try:
        yield d
    finally:
        d.quit()


def _canvas(driver) -> np.ndarray:  # type: ignore[no-untyped-def]
    data = driver.execute_script(
        "const c = document.getElementById('view');"
        "return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];"
    )
    w, h, px = data
    return np.asarray(px, dtype=np.uint8).reshape(h, w, 4)[..., :3]


def _wait(cond, timeout: float = 60.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if isinstance(v, np.ndarray) or (v is not None and v is not False and v != []):
            return v
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_viewer_upload_predict_overlay(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, driver) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    model = shared_tiny_model(tmp_path_factory)
    case, _ = phantom()
    study = tmp_path / "phantom_ct.nii.gz"
    nib.save(nib.Nifti1Image(case.image, case.affine), study)

    with live_server(tmp_path / "work", model) as url:
        driver.get(url + "/?token=" + TOKEN)  # as the address `kidneyseg serve` prints
        _wait(lambda: "model:" in driver.find_element(By.ID, "model").text, 20, "the page to load its config")
        driver.find_element(By.ID, "file").send_keys(str(study))
        _wait(lambda: "voxels" in driver.find_element(By.ID, "study").text, 30, "the upload to open")
        # the slice is fetched and drawn after the study line appears: wait for the canvas to take its size
        _wait(lambda: _canvas(driver).shape[:2] != (1, 1), 30, "the first slice to be drawn")
        before = _canvas(driver)
        assert before.shape[:2] == (56, 64)  # axial slice of the RAS volume: rows = y, cols = x

        driver.find_element(By.ID, "predict").click()
        _wait(lambda: driver.find_elements(By.ID, "volumesTable"), 90, "the prediction and the volumes table")
        status = driver.find_element(By.ID, "status").text
        assert "done" in status, status
        assert float(driver.find_element(By.ID, "progress").get_attribute("value")) == 1.0
        volumes = driver.find_element(By.ID, "volumes").text
        assert "right kidney" in volumes and "left kidney" in volumes
        kidney_row = next(line for line in volumes.splitlines() if line.startswith("kidney + masses"))
        assert sum(float(x) for x in kidney_row.split()[-3:-1]) > 5.0, kidney_row  # right + left mL

        with_overlay = _wait(lambda: (lambda c: c if (c != before).any() else None)(_canvas(driver)), 10,
                             "the overlay to be drawn")
        coloured = (with_overlay != before).any(axis=2)
        assert coloured.sum() > 50
        # both kidneys are shown, on both halves of the image (patient right on the image left)
        cols = np.flatnonzero(coloured.any(axis=0))
        assert cols.min() < 32 < cols.max()

        # opacity slider to 100 %: overlay pixels take the pure label colours, grey pixels stay
        slider = driver.find_element(By.ID, "opacity")
        slider.send_keys(Keys.END)
        _wait(lambda: driver.find_element(By.ID, "opacityLabel").text == "100%", 5, "opacity 100 %")
        full = _canvas(driver)
        assert (full[coloured] != with_overlay[coloured]).any(axis=1).mean() > 0.9
        assert np.array_equal(full[~coloured], before[~coloured])
        green = np.array([46, 160, 67])  # kidney colour (kidneyseg.labels.COLOR_KIDNEY)
        assert (np.abs(full[coloured].astype(int) - green).max(axis=1) == 0).mean() > 0.5

        # per-label toggle: kidney off removes the kidney colour
        driver.find_element(By.CSS_SELECTOR, "input[data-label='1']").click()
        off = _canvas(driver)
        assert (np.abs(off.astype(int) - green).max(axis=2) == 0).sum() == 0
        driver.find_element(By.CSS_SELECTOR, "input[data-label='1']").click()
        slider.send_keys(Keys.HOME)
        for _ in range(55):
            slider.send_keys(Keys.ARROW_RIGHT)
        _wait(lambda: driver.find_element(By.ID, "opacityLabel").text == "55%", 5, "opacity 55 %")

        # slice slider: another slice shows other pixels
        sl = driver.find_element(By.ID, "slice")
        start = sl.get_attribute("value")
        sl.send_keys(Keys.HOME)
        _wait(lambda: sl.get_attribute("value") == "0", 5, "slice 0")
        _wait(lambda: not np.array_equal(_canvas(driver), full), 10, "another slice")
        assert start != "0"
        for _ in range(int(start)):
            sl.send_keys(Keys.ARROW_RIGHT)
        _wait(lambda: sl.get_attribute("value") == start, 10, "back to the middle slice")
        time.sleep(0.5)

        links = {a.get_attribute("id"): a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "a.button")}
        assert links["dlLabel"].endswith("/label") and links["dlReport"].endswith("/report")
        shot = tmp_path / "viewer.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        keep = os.environ.get("KIDNEYSEG_VIEWER_SCREENSHOT")
        if keep:
            Path(keep).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, keep)
