"""Headless Chromium through Selenium (optional import): screenshots of reports, browser tests.

Only local files and 127.0.0.1 pages are opened. The system's chromium and chromedriver are used
directly (`CHROMIUM`, `CHROMEDRIVER`, or the `LPM_CHROMIUM` / `LPM_CHROMEDRIVER` environment
variables), so Selenium never looks for or downloads a driver.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def browser_available() -> bool:
    """True when selenium, chromium and chromedriver are all present."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return all(Path(p).is_file() for p in _paths())


def _paths() -> tuple[str, str]:
    return (
        os.environ.get("LPM_CHROMIUM", CHROMIUM),
        os.environ.get("LPM_CHROMEDRIVER", CHROMEDRIVER),
    )


@contextmanager
def chromium(width: int = 1100, height: int = 900):
    """A headless Chromium WebDriver with a fresh profile, closed on exit."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        raise ImportError("browser features need selenium: pip install 'lpm[bench]'") from err
    binary, driver_path = _paths()
    for p, what in ((binary, "chromium"), (driver_path, "chromedriver")):
        if not Path(p).is_file():
            raise FileNotFoundError(
                f"{what} not found at {p}; install it or set LPM_{what.upper()} to its path"
            )
    profile = tempfile.mkdtemp(prefix="lpm-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot_page(
    html_file: Path, png: Path, *, width: int = 1100, height: int = 1400, max_kb: int = 300
) -> Path:
    """Open a local HTML file in headless Chromium and save a PNG screenshot of the viewport.

    The PNG is re-encoded with fewer colours when it exceeds `max_kb` kilobytes.
    """
    html_file = Path(html_file).resolve()
    if not html_file.is_file():
        raise FileNotFoundError(f"{html_file} does not exist")
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    with chromium(width, height) as driver:
        driver.get(html_file.as_uri())
        driver.save_screenshot(str(png))
    if png.stat().st_size > max_kb * 1024:
        _shrink_png(png, max_kb)
    return png


def _shrink_png(png: Path, max_kb: int) -> None:
    import cv2
    import numpy as np

    img = cv2.imread(str(png), cv2.IMREAD_COLOR)
    for levels in (32, 16, 8):
        q = np.round(img.astype(np.float32) / 255 * (levels - 1)) * (255 / (levels - 1))
        cv2.imwrite(str(png), q.astype(np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if png.stat().st_size <= max_kb * 1024:
            return
