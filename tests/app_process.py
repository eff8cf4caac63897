"""`python app.py` in its own process, spoken to over raw HTTP as any client could.

Its own process, so that its memory can be measured, and its own Gradio folder
(GRADIO_TEMP_DIR), so that what a request leaves on disk can be counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from hub_server import free_port

ROOT = Path(__file__).resolve().parent.parent


class AppProcess:
    def __init__(self, workdir: Path):
        self.upload_root = workdir / "gradio"
        self.log_path = workdir / "app.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "GRADIO_TEMP_DIR": str(self.upload_root), "GRADIO_SERVER_PORT": str(self.port),
               "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/gradio_api/info", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("app did not start in 180 s")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

    def upload(self, path: Path) -> str:
        """POST /gradio_api/upload: the path Gradio stored the file at."""
        with path.open("rb") as handle:
            response = httpx.post(self.url + "/gradio_api/upload", files={"files": (path.name, handle)}, timeout=60)
        response.raise_for_status()
        return response.json()[0]

    def submit(self, payload: object) -> httpx.Response:
        """POST /gradio_api/call/predict with one raw input."""
        return httpx.post(self.url + "/gradio_api/call/predict", json={"data": [payload]}, timeout=10)

    def result(self, event_id: str, timeout: float = 60, api: str = "predict") -> tuple[str, object]:
        """The SSE answer to an event: ("complete", outputs) or ("error", message); a
        streaming endpoint's first answer."""
        text = ""
        with httpx.stream("GET", f"{self.url}/gradio_api/call/{api}/{event_id}", timeout=timeout) as stream:
            for chunk in stream.iter_text():
                text += chunk
                if "event: complete" in text or "event: error" in text or "event: generating" in text:
                    if text.endswith("\n\n"):
                        break
        event, data = None, None
        for line in text.splitlines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error", "generating"):
                data = json.loads(line.split(":", 1)[1])
        if event == "error":
            data = data.get("error") if isinstance(data, dict) else data
        return event, data

    def call(self, payload: object, timeout: float = 60) -> tuple[str, object]:
        response = self.submit(payload)
        response.raise_for_status()
        return self.result(response.json()["event_id"], timeout)

    def call_file(self, path: Path) -> tuple[str, object]:
        return self.call({"path": self.upload(path), "meta": {"_type": "gradio.FileData"}})

    # Memory, from /proc (Linux).
    def rss_bytes(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {field} in /proc status")

    def reset_peak_rss(self) -> None:
        """Makes VmHWM (peak RSS) start again from the current RSS."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.upload_root.rglob("*") if p.is_file() and not p.is_symlink())
