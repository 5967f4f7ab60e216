"""Headless Chromium (Debian ``chromium`` + ``chromium-driver``) for the report and explore pages: the tests that
open them and the bench that times the explore page start it here, with the same flags."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = "Debian chromium + chromium-driver not installed (.ci/run installs them: apt-get install chromium chromium-driver)"


def chromium(window: tuple[int, int] = (1400, 900), webgl: bool = False, offline: bool = False):
    """A headless Chromium under WebDriver, with the browser's console log kept.

    ``webgl``: WebGL through SwiftShader, in software (no GPU needed), and the page composited in software, as Chrome
    does on a machine without a GPU (compositing through SwiftShader instead would emulate a GPU no one has, and
    makes every 2D canvas several times slower); otherwise the GPU is off.
    ``offline``: the network is off and every host resolves to nothing, so a page that needs the network fails.
    Raises ImportError without selenium and RuntimeError without chromium + chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if CHROMIUM is None or CHROMEDRIVER is None:
        raise RuntimeError(MISSING)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    flags = ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={window[0]},{window[1]}",
             "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-quic"]
    flags += (["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-gpu-compositing"] if webgl
              else ["--disable-gpu"])
    if offline:
        flags.append("--host-resolver-rules=MAP * ~NOTFOUND")
    for flag in flags:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    if offline:
        driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
    return driver
