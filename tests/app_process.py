"""`python app.py` in its own process, spoken to over raw HTTP as any client could.

Its own process, so that its memory can be measured, and its own Gradio folder
(GRADIO_TEMP_DIR), so that what a request leaves on disk can be counted.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from hub_server import free_port

ROOT = Path(__file__).resolve().parent.parent


def as_client(address: str | None) -> dict[str, str]:
    """Headers that make a request come from `address`: the app trusts X-Forwarded-For
    from a proxy on its own machine (uvicorn's default), so a test can speak as several
    clients, as Hugging Face's proxies make a Space's visitors several."""
    return {"X-Forwarded-For": address} if address else {}


class AppProcess:
    def __init__(self, workdir: Path, env: dict[str, str] | None = None):
        self.upload_root = workdir / "gradio"
        self.log_path = workdir / "app.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "GRADIO_TEMP_DIR": str(self.upload_root), "GRADIO_SERVER_PORT": str(self.port),
               "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/gradio_api/info", timeout=2).status_code == 200:
                    # What the folder held at the start (the app's examples): kept, not counted in its caps.
                    self.start_bytes = self.disk_bytes()
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

    def upload(self, path: Path, name: str | None = None, client: str | None = None) -> str:
        """POST /gradio_api/upload: the path Gradio stored the file at (sent as `name`)."""
        with path.open("rb") as handle:
            response = httpx.post(self.url + "/gradio_api/upload", files={"files": (name or path.name, handle)},
                                  headers=as_client(client), timeout=60)
        response.raise_for_status()
        return response.json()[0]

    def submit(self, payload: object, api: str = "predict", client: str | None = None) -> httpx.Response:
        """POST /gradio_api/call/<api> with one raw input, from `client` (an address) if given."""
        data = [payload] + ([None] if api == "live" else [])
        return httpx.post(f"{self.url}/gradio_api/call/{api}", json={"data": data}, headers=as_client(client),
                          timeout=10)

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

    def raw_post(self, path: str, headers: dict[str, str], body: bytes = b"") -> int:
        """A POST written by hand (a client may declare any length): the status code."""
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as connection:
            connection.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode() + body)
            answer = connection.recv(4096).decode("latin-1")
        return int(answer.split(" ", 2)[1])

    def call(self, payload: object, timeout: float = 60, api: str = "predict") -> tuple[str, object]:
        response = self.submit(payload, api)
        response.raise_for_status()
        return self.result(response.json()["event_id"], timeout, api)

    def call_file(self, path: Path, api: str = "predict", name: str | None = None,
                  timeout: float = 60) -> tuple[str, object]:
        return self.call({"path": self.upload(path, name), "meta": {"_type": "gradio.FileData"}}, timeout, api)

    def dependency(self, api_name: str) -> tuple[int, int]:
        """(fn_index, trigger_id) of an endpoint, from the app's config, as the browser reads them."""
        config = httpx.get(self.url + "/config", timeout=10).json()
        for index, dependency in enumerate(config["dependencies"]):
            if dependency.get("api_name") == api_name:
                return index, dependency["targets"][0][0]
        raise KeyError(api_name)

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
        total = 0
        for path in self.upload_root.rglob("*"):
            try:  # the app may delete a file between the listing and its size
                info = path.lstat()
            except FileNotFoundError:
                continue
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
        return total


def frame_data_url(rgb: np.ndarray, format: str = "JPEG") -> str:
    """A frame as the browser's webcam stream sends it: a base64 data URL."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=format)
    return f"data:image/{format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


class LiveClient:
    """A webcam stream spoken over raw HTTP as the browser speaks it: join the queue with
    the first frame, listen on the session's event stream, post each further frame to
    /gradio_api/stream/<event_id>. `outputs` holds the arrival time of each processed frame."""

    def __init__(self, app: AppProcess, client: str | None = None):
        self.url = app.url
        self.fn_index, self.trigger_id = app.dependency("live")
        self.session = uuid.uuid4().hex[:12]
        self.event_id: str | None = None
        self.outputs: list[float] = []
        self.messages: list[dict] = []
        self.closed = threading.Event()
        self.closed_at: float | None = None
        self.http = httpx.Client(timeout=10, headers=as_client(client))

    def body(self, frame: str) -> dict:
        return {"data": [{"path": None, "url": frame, "meta": {"_type": "gradio.FileData"}}, None],
                "fn_index": self.fn_index, "trigger_id": self.trigger_id, "session_hash": self.session,
                "event_data": None}

    def start(self, frame: str) -> httpx.Response:
        response = self.http.post(self.url + "/gradio_api/queue/join", json=self.body(frame))
        if response.status_code == 200:
            self.event_id = response.json()["event_id"]
            threading.Thread(target=self._listen, daemon=True).start()
        else:
            self.closed.set()
        return response

    def _listen(self) -> None:
        try:
            with httpx.stream("GET", self.url + "/gradio_api/queue/data", params={"session_hash": self.session},
                              timeout=httpx.Timeout(10, read=None)) as stream:
                for line in stream.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    message = json.loads(line[5:])
                    self.messages.append(message)
                    if message.get("msg") == "process_streaming":
                        self.outputs.append(time.monotonic())
                    if message.get("msg") in ("process_completed", "unexpected_error"):
                        break
        except httpx.HTTPError:
            pass
        finally:
            self.closed_at = time.monotonic()
            self.closed.set()

    def send(self, frame: str) -> int:
        return self.http.post(f"{self.url}/gradio_api/stream/{self.event_id}", json=self.body(frame)).status_code

    def stream(self, frames: list[str], seconds: float, every: float = 0.04) -> None:
        """Sends `frames` in a loop for `seconds`, one every `every` seconds, as a webcam would."""
        start = time.monotonic()
        index = 0
        while time.monotonic() - start < seconds and not self.closed.is_set():
            self.send(frames[index % len(frames)])
            index += 1
            time.sleep(every)

    def completed(self) -> dict | None:
        return next((m for m in self.messages if m.get("msg") == "process_completed"), None)
