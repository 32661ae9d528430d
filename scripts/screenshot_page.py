"""Make docs/assets/search-page.png, the picture of the search page in the README.

Indexes bulk_images/ into a temporary folder, starts `deepvision serve` on it, uploads one of the
edited copies in that_one_image/ with Debian's headless Chromium (chromium + chromium-driver,
through selenium) and saves the page as it shows the ranked matches.

    DEEPVISION_OFFLINE=1 python scripts/screenshot_page.py
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "assets" / "search-page.png"
QUERY = REPO / "that_one_image" / "coffee_cup__third_q30.jpg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the service did not answer {url} within {seconds:g} s")


def main() -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    cli = [sys.executable, "-m", "deepvision"]
    with tempfile.TemporaryDirectory() as tmp:
        index = ["--index-dir", tmp, "--model", "efficientnet-lite0"]
        subprocess.run([*cli, "index", "bulk_images", *index, "--quiet"], cwd=REPO, check=True)
        port = _free_port()
        server = subprocess.Popen([*cli, "serve", "--index-dir", tmp, "--port", str(port),
                                   "--quiet"], cwd=REPO)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait(url + "/api/health", 120)
            warm = urllib.request.Request(url + "/api/search", data=QUERY.read_bytes(),
                                          headers={"Content-Type": "image/jpeg"})
            urllib.request.urlopen(warm, timeout=120).read()  # the page then shows a warm time
            options = webdriver.ChromeOptions()
            options.binary_location = shutil.which("chromium") or "chromium"
            for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1100,820",
                        "--hide-scrollbars"):
                options.add_argument(arg)
            driver = webdriver.Chrome(options=options, service=Service(  # no driver download
                executable_path=shutil.which("chromedriver") or "chromedriver"))
            try:
                driver.get(url + "/")
                driver.find_element(By.ID, "image").send_keys(str(QUERY))
                WebDriverWait(driver, 60).until(
                    lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results figure.match")) > 0)
                time.sleep(2)  # thumbnails load lazily
                OUT.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(OUT))
            finally:
                driver.quit()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
