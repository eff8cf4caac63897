"""End to end in headless Chromium: upload a photo, press the button, see the result."""

import shutil

import pytest

from photos import ASTRONAUT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")


def test_upload_press_and_see_keypoints(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        try:
            page = browser.new_page()
            page.goto(server)
            page.locator("#photo input[type=file]").set_input_files(str(ASTRONAUT))
            expect(page.locator("#photo img")).to_be_visible(timeout=30_000)
            page.locator("#run").click()
            expect(page.locator("#annotated img")).to_be_visible(timeout=60_000)
            expect(page.locator("#status")).to_contain_text("Found 1 face", timeout=60_000)
            expect(page.locator("#result")).to_contain_text("keypoints", timeout=10_000)
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            source = page.locator("#annotated img").get_attribute("src")
            assert source and (".png" in source or source.startswith("data:image/png"))
        finally:
            browser.close()
