"""End to end in headless Chromium: the NiiVue viewer of `kidneyseg serve` and of `kidneyseg report --viewer`.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them);
skipped with a message when they are absent.  WebGL2 comes from SwiftShader
(``--use-angle=swiftshader --enable-unsafe-swiftshader``: software rendering, no GPU).
Set ``KIDNEYSEG_VIEWER_SCREENSHOT`` / ``KIDNEYSEG_REPORT_SCREENSHOT`` to paths to keep copies of
the screenshots (docs/images/viewer_example.png and report_viewer_example.png are made so).

What is checked, in both: no console error; NiiVue draws the image (grey pixels on the canvas);
the label overlay shows (pixels of the kidney colour, on both halves of the image, at opacity
100 %); a label toggle removes that colour; a window preset changes the picture; a click on a
structure row moves the crosshair to that structure (world mm); every request the page made
stayed on 127.0.0.1 (the viewer) or inside the file (the report: no http at all).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "reporting"))
from live_server import TOKEN, live_server
from phantom_case import phantom
from tiny_model import shared_tiny_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
KIDNEY_GREEN = np.array([46, 160, 67])  # kidneyseg.labels.COLOR_KIDNEY

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
    for flag in ("--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--window-size=1400,1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(60)
    try:
        yield d
    finally:
        d.quit()


def _canvas(driver) -> np.ndarray:  # type: ignore[no-untyped-def]
    """RGB pixels of the NiiVue canvas as the screen shows them (a screenshot of the element)."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    png = driver.find_element(By.ID, "view").screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _wait(cond, timeout: float = 60.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if isinstance(v, np.generic):  # a numpy bool from a comparison
            v = v.item()
        if isinstance(v, np.ndarray) or (v is not None and v is not False and v != []):
            return v
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _settled(driver, what: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The canvas once two screenshots 0.4 s apart agree (NiiVue draws asynchronously)."""
    state: dict[str, np.ndarray] = {}

    def same():  # type: ignore[no-untyped-def]
        c = _canvas(driver)
        prev, state["c"] = state.get("c"), c
        return c if prev is not None and prev.shape == c.shape and np.array_equal(prev, c) else None

    def step():  # type: ignore[no-untyped-def]
        time.sleep(0.4)
        return same()

    return _wait(step, 30, what)


def _green(img: np.ndarray, tol: int = 3) -> np.ndarray:
    return np.abs(img.astype(int) - KIDNEY_GREEN).max(axis=2) <= tol


def _greenish(img: np.ndarray) -> np.ndarray:
    """Pixels tinted by the kidney colour at partial opacity (green well above red and blue)."""
    i = img.astype(int)
    return (i[..., 1] > i[..., 0] + 30) & (i[..., 1] > i[..., 2] + 30)


def _grey(img: np.ndarray) -> np.ndarray:
    """Pixels that are grey (r == g == b) and not black: the image itself."""
    i = img.astype(int)
    return (np.abs(i[..., 0] - i[..., 1]) <= 2) & (np.abs(i[..., 1] - i[..., 2]) <= 2) & (i[..., 0] > 20)


def _console_errors(driver) -> list[str]:  # type: ignore[no-untyped-def]
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


#: Schemes that never leave the machine: the browser's own new-tab page (chrome://), inline data.
LOCAL_SCHEMES = ("chrome://", "chrome-untrusted://", "data:", "blob:")


def _requested_urls(driver) -> list[str]:  # type: ignore[no-untyped-def]
    """Every URL the browser asked for since the last call (the DevTools network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def _check_overlay_window_toggle(driver) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The checks both pages share, in the axial layout; returns the final canvas."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "layout")).select_by_value("axial")
    slider = driver.find_element(By.ID, "opacity")
    slider.send_keys(Keys.END)
    _wait(lambda: driver.find_element(By.ID, "opacityLabel").text == "100%", 5, "opacity 100 %")
    full = _settled(driver, "the axial view at opacity 100 %")
    assert _grey(full).sum() > 2000, "NiiVue drew no image"
    green = _green(full)
    assert green.sum() > 200, f"kidney colour pixels: {green.sum()}"
    # both kidneys, one on each half of the image (the image's grey extent gives its middle)
    gcols = np.flatnonzero(_grey(full).any(axis=0))
    middle = (gcols.min() + gcols.max()) / 2
    kcols = np.flatnonzero(green.any(axis=0))
    assert kcols.min() < middle < kcols.max(), (kcols.min(), middle, kcols.max())

    # per-label toggle: kidney off removes the kidney colour, on brings it back
    box = driver.find_element(By.CSS_SELECTOR, "input[data-label='1']")
    box.click()
    off = _settled(driver, "the kidney label off")
    assert _green(off).sum() == 0
    box.click()
    _wait(lambda: _green(_canvas(driver)).sum() > 200, 10, "the kidney label back")

    # window/level: the kidney preset (W500/L150) changes the grey of the image, not the labels' colour
    before = _settled(driver, "the abdomen window")
    Select(driver.find_element(By.ID, "wlPreset")).select_by_value("kidney")
    _wait(lambda: driver.find_element(By.ID, "wlWidth").get_attribute("value") == "500", 5, "W 500 in the controls")
    after = _settled(driver, "the kidney window")
    grey_px = _grey(before) & _grey(after)
    assert (np.abs(before.astype(int) - after.astype(int)).max(axis=2)[grey_px] > 5).mean() > 0.3
    assert "-100..400 HU" in driver.find_element(By.ID, "wlText").text
    # typed window: W 100 L 40
    w = driver.find_element(By.ID, "wlWidth")
    w.clear()
    w.send_keys("100", Keys.TAB)
    narrow = _settled(driver, "a typed window")
    assert not np.array_equal(narrow, after)

    # a click on the left kidney's row moves the crosshair there (RAS mm)
    row = next(r for r in driver.find_elements(By.CSS_SELECTOR, "#structuresTable tr[data-mm]")
               if r.text.startswith("left kidney"))
    target = [float(x) for x in row.get_attribute("data-mm").split(",")]
    row.click()

    def at_target():  # type: ignore[no-untyped-def]
        text = driver.find_element(By.ID, "location").text  # "RAS x, y, z mm · v HU"
        if not text.startswith("RAS "):
            return None
        xyz = [float(v) for v in text[4:].split(" mm")[0].split(",")]
        return xyz if max(abs(a - b) for a, b in zip(xyz, target)) < 3.0 else None

    _wait(at_target, 10, f"the crosshair at the left kidney {target}")
    zoomed_before = _settled(driver, "the view at the left kidney")
    driver.find_element(By.ID, "zoomIn").click()
    zoomed = _settled(driver, "zoom")
    assert not np.array_equal(zoomed, zoomed_before)
    driver.find_element(By.ID, "zoomReset").click()
    Select(driver.find_element(By.ID, "wlPreset")).select_by_value("abdomen")
    Select(driver.find_element(By.ID, "layout")).select_by_value("multiplanar")
    return _settled(driver, "the multiplanar view")


def test_viewer_upload_predict_overlay(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, driver) -> None:  # type: ignore[no-untyped-def]
    from oracle_predictor import WithPhantomTumour
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from kidneyseg.inference import Predictor

    model = shared_tiny_model(tmp_path_factory)
    case, lab = phantom()
    study = tmp_path / "phantom_ct.nii.gz"
    nib.save(nib.Nifti1Image(case.image, case.affine), study)

    # the tiny model finds the kidneys only: the phantom's tumour is added to its label map, so the structures
    # panel has a tumour with its RENAL score; QC scores every structure from the tiny model's own uncertainty
    with live_server(tmp_path / "work", model, predictor=WithPhantomTumour(Predictor(model), lab)) as url:
        driver.get(url + "/?token=" + TOKEN)  # as the address `kidneyseg serve` prints
        _wait(lambda: "model:" in driver.find_element(By.ID, "model").text, 20, "the page to load its config")
        driver.find_element(By.ID, "file").send_keys(str(study))
        _wait(lambda: "voxels" in driver.find_element(By.ID, "study").text, 60, "the upload to open in NiiVue")
        assert "ct (from the intensities)" in driver.find_element(By.ID, "study").text
        before = _settled(driver, "the image to be drawn")
        assert _grey(before).sum() > 2000, "NiiVue drew no image"
        assert _greenish(before).sum() == 0  # no label yet

        driver.find_element(By.ID, "predict").click()
        _wait(lambda: driver.find_elements(By.ID, "volumesTable"), 90, "the prediction and the volumes table")
        status = driver.find_element(By.ID, "status").text
        assert "done" in status, status
        assert float(driver.find_element(By.ID, "progress").get_attribute("value")) == 1.0
        volumes = driver.find_element(By.ID, "volumes").text
        assert "right kidney" in volumes and "left kidney" in volumes
        kidney_row = next(line for line in volumes.splitlines() if line.startswith("kidney + masses"))
        assert sum(float(x) for x in kidney_row.split()[-3:-1]) > 5.0, kidney_row  # right + left mL
        # the structures panel: a QC flag per structure, the tumour's RENAL score (parts in its tooltip)
        head = driver.find_element(By.CSS_SELECTOR, "#structuresTable tr").text
        assert "QC" in head and "RENAL" in head, head
        tumour_row = next(line for line in volumes.splitlines() if line.startswith("right tumour 1"))
        assert ("pass (" in tumour_row or "review (" in tumour_row) and " N? L" in tumour_row, tumour_row
        assert "(R+E+L " in tumour_row, tumour_row
        assert any(f in next(line for line in volumes.splitlines() if line.startswith("left kidney"))
                   for f in ("pass (", "review ("))
        assert "RENAL right tumour 1: R 1" in volumes and "N not available" in volumes
        _wait(lambda: driver.find_element(By.ID, "viewbox").get_attribute("data-ready") == "label", 30,
              "the label map in NiiVue")
        with_overlay = _settled(driver, "the overlay to be drawn")
        assert not np.array_equal(with_overlay, before) and _greenish(with_overlay).sum() > 50
        assert driver.find_elements(By.CSS_SELECTOR, "#uncBox[hidden]")  # no uncertainty: its controls hidden

        # the axial slice slider moves NiiVue's axial slice
        sl = driver.find_element(By.ID, "slice")
        start = sl.get_attribute("value")
        assert start != "0"
        sl.send_keys(Keys.HOME)
        _wait(lambda: sl.get_attribute("value") == "0", 5, "slice 0")
        _wait(lambda: not np.array_equal(_canvas(driver), with_overlay), 10, "another slice")
        sl.send_keys(*([Keys.ARROW_RIGHT] * int(start)))
        _wait(lambda: sl.get_attribute("value") == start, 10, "back to the middle slice")

        final = _check_overlay_window_toggle(driver)
        assert _green(final).sum() > 0

        links = {a.get_attribute("id"): a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "a.button")}
        assert links["dlLabel"].endswith("/label") and links["dlReport"].endswith("/report")
        port = urlsplit(url).port
        errors = _console_errors(driver)
        assert not errors, errors
        urls = _requested_urls(driver)
        assert any(u.endswith("/nifti/image.nii") for u in urls) and any(u.endswith("/nifti/label.nii") for u in urls)
        away = [u for u in urls if not (u.startswith(f"http://127.0.0.1:{port}/") or u.startswith(LOCAL_SCHEMES))]
        assert not away, away
        shot = tmp_path / "viewer.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        keep = os.environ.get("KIDNEYSEG_VIEWER_SCREENSHOT")
        if keep:
            Path(keep).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, keep)


def test_report_viewer(tmp_path: Path, driver) -> None:  # type: ignore[no-untyped-def]
    """`kidneyseg report --viewer` opens from file:// with NiiVue drawing the embedded image and labels."""
    from selenium.webdriver.common.by import By

    from kidneyseg.cli import main

    case, lab = phantom()
    nib.save(nib.Nifti1Image(case.image, case.affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(lab, case.affine), tmp_path / "seg.nii.gz")
    out = tmp_path / "report.html"
    assert main(["report", "--image", str(tmp_path / "ct.nii.gz"), "--seg", str(tmp_path / "seg.nii.gz"),
                 "--ref", str(tmp_path / "seg.nii.gz"), "--viewer", "-o", str(out)]) == 0
    assert out.stat().st_size < 20 * 1024 * 1024
    driver.get(out.as_uri())
    _wait(lambda: driver.find_element(By.ID, "viewbox").get_attribute("data-ready") == "label", 60,
          "NiiVue to load the embedded volumes")
    driver.execute_script("document.getElementById('viewbox').scrollIntoView()")
    first = _settled(driver, "the report's viewer")
    assert _grey(first).sum() > 2000 and _greenish(first).sum() > 50
    _check_overlay_window_toggle(driver)
    errors = _console_errors(driver)
    assert not errors, errors
    urls = _requested_urls(driver)
    assert out.as_uri() in urls
    away = [u for u in urls if not u.startswith(("file://", *LOCAL_SCHEMES))]
    assert not away, away
    driver.execute_script("document.getElementById('viewbox').scrollIntoView()")
    shot = tmp_path / "report.png"
    driver.save_screenshot(str(shot))
    keep = os.environ.get("KIDNEYSEG_REPORT_SCREENSHOT")
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep)
