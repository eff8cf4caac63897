"""What one client may hold of a public Gradio server, beyond a single request.

Gradio's own queue has one waiting line for every endpoint together, holds a
stream's place until its time limit whether or not frames still arrive, and
takes an upload of any number of files. Three guards, installed by the app:

- `EndpointLines`: each endpoint waits in its own line of a fixed length; past it
  a submission is refused at once (HTTP 503, with the endpoint's message), so a
  flood on one endpoint never fills another's line.
- `limit_stream_idle`: a stream whose client sends no frame for a few seconds is
  closed, and its place freed.
- `BodyLimit`: a request body larger than a limit (one for uploads, a small one
  for everything else: a JSON payload or a live frame) is cut off (HTTP 413) while
  it arrives, before it is written to disk or parsed in memory; after each upload,
  a callback (the app's upload folder cap) runs; a client that drops its upload
  costs one log line, not a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gradio import queueing, route_utils
from starlette.requests import ClientDisconnect

log = logging.getLogger("jaxkp.app")


class EndpointLines(queueing.Queue):
    """Gradio's queue with a waiting line per endpoint: `lines` maps an api_name to how
    many of its submissions may wait (those running are not counted), `busy` to the
    message a refused one gets. Made by `install`, on the queue Blocks.queue() built."""

    lines: Mapping[str, int] = {}
    busy: Mapping[str, str] = {}
    default_line = 8  # for an endpoint `lines` does not name
    _push_lock: asyncio.Lock | None = None

    @classmethod
    def install(cls, queue: queueing.Queue, lines: Mapping[str, int], busy: Mapping[str, str]) -> None:
        queue.__class__ = cls
        queue.lines, queue.busy = dict(lines), dict(busy)
        queue.max_size = None  # the lines bound the waiting instead

    async def push(self, body: Any, request: Any, username: str | None) -> tuple[bool, Any, str]:
        try:
            fn = route_utils.get_fn(self.blocks, None, body)
        except Exception:  # noqa: BLE001 - Gradio's own push answers a bad fn_index
            return await super().push(body, request, username)
        limit = self.lines.get(fn.api_name, self.default_line)
        if self._push_lock is None:
            self._push_lock = asyncio.Lock()
        async with self._push_lock:  # one push at a time, so no line overfills
            line = self.event_queue_per_concurrency_id.get(fn.concurrency_id)
            if line is not None and len(line.queue) >= limit:
                log.info("refused %s: its line of %d is full", fn.api_name, limit)
                return False, self.busy.get(fn.api_name, "Busy: try again soon."), "queue_full"
            return await super().push(body, request, username)


_GRADIO_WAIT_FOR_BATCH = queueing.Queue.wait_for_batch


def limit_stream_idle(seconds: float) -> None:
    """Streams wait at most `seconds` for their client's next input, then close and
    free their place. (Gradio waits for the rest of the stream's time limit, so a
    client that sent one frame and vanished held a place for minutes.)"""

    async def wait_for_batch(events: list, timeouts: list[float]) -> tuple[list, list]:
        return await _GRADIO_WAIT_FOR_BATCH(events, [min(timeout, seconds) for timeout in timeouts])

    queueing.Queue.wait_for_batch = staticmethod(wait_for_batch)


class PayloadTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request whose body passes its limit (`upload_bytes` on an
    upload route, `other_bytes` elsewhere) is answered 413; a declared Content-Length
    over it before anything is read."""

    def __init__(self, app: Callable[..., Awaitable[None]], upload_bytes: int, other_bytes: int,
                 upload_suffix: str = "/upload", after_upload: Callable[[], object] | None = None):
        self.app, self.upload_suffix = app, upload_suffix
        self.upload_bytes, self.other_bytes = upload_bytes, other_bytes
        self.after_upload = after_upload  # e.g. FolderCap.prune: the folder's cap holds upload by upload

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope.get("path", "").rstrip("/").endswith(self.upload_suffix)
        limit = self.upload_bytes if upload else self.other_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(send, limit)
            return
        received = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except PayloadTooLarge:
            log.info("refused a request body of over %d bytes (%s)", limit, scope.get("path"))
            if not started:
                await self._refuse(send, limit)
        except ClientDisconnect:
            log.info("a client dropped its request while sending it (%s)", scope.get("path"))
        finally:
            if upload and self.after_upload is not None:
                await asyncio.to_thread(self.after_upload)

    async def _refuse(self, send: Callable[[dict], Awaitable[None]], limit: int) -> None:
        body = f'{{"detail": "Request too large: at most {limit / 1e6:g} MB."}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
