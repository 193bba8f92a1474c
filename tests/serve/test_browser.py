"""A real headless Chromium: fake microphone speaks, the character listens, the demo agent answers.

Set LPM_SERVE_SCREENSHOT=PATH.png to keep the screenshot and LPM_SERVE_NANO=1 to serve the shipped
lpm-nano-online (docs/img/serve_browser.png is made so).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.serve.conftest import RATE, speech, start_server

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(DRIVER)), reason="needs chromium + chromedriver"
)


def fake_mic_wav(path: Path) -> Path:
    """0.5 s silence, a sentence, then 5 s of silence (Chromium loops the file)."""
    talk = speech("Hi! I would love to hear about your day, and the weather outside.")
    quiet = np.zeros(int(5.0 * RATE), np.float32)
    sf.write(path, np.concatenate([quiet[: RATE // 2], talk, quiet]), RATE, subtype="PCM_16")
    return path


def chromium(tmp_path: Path, wav: Path, extra: tuple[str, ...] = ()):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1000,660",
        *extra,
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


@pytest.mark.slow
def test_browser_listens_then_responds(tiny_model, tmp_path):
    wav = fake_mic_wav(tmp_path / "mic.wav")
    model = tiny_model
    if os.environ.get("LPM_SERVE_NANO"):  # the shipped lpm-nano-online ("random": random weights)
        from lpm.serve.loading import load_served_model

        random = os.environ["LPM_SERVE_NANO"] == "random"
        model = load_served_model(None, random_weights=random, size=64)
    with start_server(model) as srv:
        driver = chromium(tmp_path, wav)
        try:
            driver.get(f"{srv.url}/?autostart=1&character=stage-090001")
            states: set[str] = set()
            deadline = time.monotonic() + 60
            audio = 0
            # The responding state event can precede the agent audio of its first chunk: wait
            # for both.
            while time.monotonic() < deadline and not (
                {"listening", "responding"} <= states and audio >= 1
            ):
                time.sleep(0.5)
                lpm = driver.execute_script("return window.lpm")
                states = {s["state"] for s in lpm["states"]}
                audio = lpm["audioChunks"]
            assert lpm["mic"] is True, lpm["errors"]
            assert lpm["frames"] > 24, lpm
            assert "listening" in states, lpm["states"]
            assert "responding" in states, lpm["states"]
            assert lpm["audioChunks"] >= 1  # the agent's speech arrived with the frames
            order = [s["state"] for s in lpm["states"]]
            assert order.index("listening") < len(order) - 1 - order[::-1].index("responding")
            shot = Path(os.environ.get("LPM_SERVE_SCREENSHOT", tmp_path / "serve.png"))
            driver.save_screenshot(str(shot))
            assert shot.stat().st_size > 1000
        finally:
            driver.quit()
