"""End to end in headless Chromium: upload a photo, press the button, see the result."""

import re
import shutil

import pytest

from photos import ASTRONAUT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")]


def test_upload_press_and_see_keypoints(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
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
            assert source and (".jpg" in source or source.startswith("data:image/jpeg"))
            # An example's click loads it as the photo (through the queue, as every event goes).
            page.locator("button.gallery-item").nth(1).click()
            expect(page.locator("#photo img")).to_have_attribute("src", re.compile("camera"), timeout=30_000)
        finally:
            browser.close()


def y4m_clip(path) -> str:
    """A generated 2-second clip of a sliding face, as Chromium's fake camera plays it."""
    import subprocess

    import imageio_ffmpeg
    import numpy as np

    from jaxkp.examples import moving_faces_clip

    encoder = subprocess.Popen([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo",
                                "-pix_fmt", "rgb24", "-s", "640x480", "-r", "30", "-i", "-", "-pix_fmt", "yuv420p",
                                str(path)], stdin=subprocess.PIPE)
    for frame in moving_faces_clip(60, faces=1, speed=2.0):
        encoder.stdin.write(np.ascontiguousarray(frame).tobytes())
    encoder.stdin.close()
    assert encoder.wait(60) == 0
    return str(path)


def test_live_webcam_tab_draws_the_overlay_and_counts_frames(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    camera = y4m_clip(tmp_path / "camera.y4m")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--use-fake-device-for-media-stream",
                  "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={camera}"],
        )
        try:
            page = browser.new_context(permissions=["camera"]).new_page()
            page.goto(server)
            page.get_by_role("tab", name="Live webcam").click()
            page.get_by_text("Click to Access Webcam").click()
            page.locator("#camera button[aria-label='capture photo']").click()  # starts the stream
            expect(page.locator("#live img")).to_be_visible(timeout=60_000)
            expect(page.locator("#readout")).to_contain_text("frames/s", timeout=30_000)
            expect(page.locator("#readout")).to_contain_text("1 face", timeout=30_000)
            page.wait_for_timeout(3000)
            readout = page.locator("#readout").inner_text()
            page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
            assert float(re.search(r"([\d.]+) frames/s", readout).group(1)) > 1.0, readout  # frames keep arriving
        finally:
            browser.close()
