"""What one client may hold of a public Gradio server, beyond a single request.

Gradio's own queue has one waiting line for every endpoint together, holds a
stream's place until its time limit whether or not frames still arrive, and
takes an upload of any number of files, however slowly it comes. Three guards, installed by the app:

- `EndpointLines`: each endpoint waits in its own line of a fixed length; past it
  a submission is refused at once (HTTP 503, with the endpoint's message), so a
  flood on one endpoint never fills another's line; and one client may hold only a
  few places of an endpoint (running or waiting), so its flood never fills the line
  for the other clients.
- `limit_stream_idle`: a stream whose client sends no frame for a few seconds is
  closed, and its place freed.
- `BodyLimit`: a request body larger than a limit (one for uploads, a small one
  for everything else: a JSON payload or a live frame) is cut off (HTTP 413) while
  it arrives, before it is written to disk or parsed in memory, and so is one that
  stops arriving (408); an upload gets its room in the upload folder before its
  body is read, or HTTP 503, and one client may bring only a share of that room
  (and of the uploads arriving at once) in any minute; Gradio's routes that the app does not use answer 404;
  a client that drops its upload costs one log line, not a traceback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import itertools
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from gradio import queueing, route_utils
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

log = logging.getLogger("jaxkp.app")


class QuietLog:
    """Lines logged at most once every `every_s` seconds for each kind, the next line of
    that kind saying how many were left out: a flood of refused requests once wrote
    11,000 lines in 30 s. Kinds are kept apart so that one flood hides no other line."""

    def __init__(self, every_s: float = 1.0):
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._left_out: collections.Counter[str] = collections.Counter()

    MAX_KINDS = 1_000  # kinds are the code's own labels; this only bounds a mistake

    def info(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if kind not in self._last and len(self._last) >= self.MAX_KINDS:
            self._last.clear()
            self._left_out.clear()
        if now - self._last.get(kind, -math.inf) < self.every_s:
            self._left_out[kind] += 1
            return
        if self._left_out[kind]:
            message += f" (and {self._left_out[kind]} more like it left out of the log)"
        self._last[kind], self._left_out[kind] = now, 0
        log.info(message, *args)


refusals = QuietLog()


def client_address(client: Any) -> str:
    """Who sent a request, for the per-client shares: its peer's address as the server
    has it (`scope["client"]`, a request's `.client`). Behind a proxy, uvicorn puts the
    address the proxy forwarded there, if the proxy is trusted (FORWARDED_ALLOW_IPS; the
    app sets it on a Space). An IPv6 address counts by its /64 network: one subscriber
    commonly holds all of one, and could otherwise send from 2**64 addresses."""
    host = (client[0] if isinstance(client, tuple | list) else getattr(client, "host", None)) if client else None
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return str(host)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class EndpointLines(queueing.Queue):
    """Gradio's queue with a waiting line per endpoint: `lines` maps an api_name to how
    many of its submissions may wait (those running are not counted), `per_client` to how
    many one client may have there, running or waiting, and `busy` and `client_busy` to
    the messages a refused one gets. Made by `install`, on the queue Blocks.queue() built."""

    lines: Mapping[str, int] = {}
    per_client: Mapping[str, int] = {}
    busy: Mapping[str, str] = {}
    client_busy: Mapping[str, str] = {}
    default_line = 8  # for an endpoint `lines` does not name
    _push_lock: asyncio.Lock | None = None
    # Called with each submission's inputs as it joins a line (the app marks the files
    # they name as fresh, so that no upload flood prunes them while they wait).
    on_join: Callable[[list], None] | None = None

    @classmethod
    def install(cls, queue: queueing.Queue, lines: Mapping[str, int], busy: Mapping[str, str],
                on_join: Callable[[list], None] | None = None, per_client: Mapping[str, int] | None = None,
                client_busy: Mapping[str, str] | None = None) -> None:
        queue.__class__ = cls
        queue.lines, queue.busy, queue.on_join = dict(lines), dict(busy), on_join
        queue.per_client, queue.client_busy = dict(per_client or {}), dict(client_busy or {})
        queue.max_size = None  # the lines bound the waiting instead

    def held_by(self, client: str, concurrency_id: str) -> int:
        """How many of an endpoint's places `client` holds: its submissions waiting in the
        line and those running (a live stream runs until it ends)."""
        line = self.event_queue_per_concurrency_id.get(concurrency_id)
        running = (event for job in self.active_jobs if job for event in job)
        return sum(1 for event in itertools.chain(line.queue if line is not None else (), running)
                   if event.concurrency_id == concurrency_id
                   and client_address(getattr(event.request, "client", None)) == client)

    async def push(self, body: Any, request: Any, username: str | None) -> tuple[bool, Any, str]:
        try:
            fn = route_utils.get_fn(self.blocks, None, body)
        except Exception:  # noqa: BLE001 - Gradio's own push answers a bad fn_index
            return await super().push(body, request, username)
        limit = self.lines.get(fn.api_name, self.default_line)
        if self._push_lock is None:
            self._push_lock = asyncio.Lock()
        async with self._push_lock:  # one push at a time, so no line overfills
            share = self.per_client.get(fn.api_name)
            if share is not None:
                client = client_address(getattr(request, "client", None))
                if self.held_by(client, fn.concurrency_id) >= share:
                    refusals.info("line", "refused %s: a client already holds %d places", fn.api_name, share)
                    message = self.client_busy.get(
                        fn.api_name, f"You already have {share} requests here: wait for one to finish.")
                    return False, message, "queue_full"
            line = self.event_queue_per_concurrency_id.get(fn.concurrency_id)
            if line is not None and len(line.queue) >= limit:
                refusals.info("line", "refused %s: its line of %d is full", fn.api_name, limit)
                return False, self.busy.get(fn.api_name, "Busy: try again soon."), "queue_full"
            if self.on_join is not None and isinstance(getattr(body, "data", None), list):
                self.on_join(body.data)
            return await super().push(body, request, username)


_GRADIO_WAIT_FOR_BATCH = queueing.Queue.wait_for_batch


def limit_stream_idle(seconds: float) -> None:
    """Streams wait at most `seconds` for their client's next input, then close and
    free their place. (Gradio waits for the rest of the stream's time limit, so a
    client that sent one frame and vanished held a place for minutes.)"""

    async def wait_for_batch(events: list, timeouts: list[float]) -> tuple[list, list]:
        return await _GRADIO_WAIT_FOR_BATCH(events, [min(timeout, seconds) for timeout in timeouts])

    queueing.Queue.wait_for_batch = staticmethod(wait_for_batch)


class Refused(Exception):
    """A request body the guard stops: `status` and `detail` are its answer."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class UploadSpace(Protocol):
    """Where uploads go (jaxkp.uploads.FolderCap): an upload is let in, its bytes
    counted as they arrive (each may be refused: no room), and its end told."""

    def begin_upload(self, files: int) -> bool: ...
    def take(self, size: int, may_prune: bool = True) -> bool: ...
    def end_upload(self, files: int) -> None: ...


class _Brought:
    """One client's uploads: [second, bytes, files] per second of the window, oldest
    first, their sums, and how many of its uploads arrive now."""

    __slots__ = ("slots", "bytes", "files", "arriving")

    def __init__(self) -> None:
        self.slots: collections.deque[list[int]] = collections.deque()
        self.bytes = self.files = self.arriving = 0


class ClientShares:
    """Each client's share of the uploads: what it brought in the last `window_s` seconds
    (at most `max_bytes` and `max_files`), and how many of its uploads arrive at once (at
    most `max_arriving`). The window is the upload folder's youngest age that may be
    pruned (FolderCap.min_age_s), so what a client brought within it is the room it holds
    that no other client's upload can free: with a share under the folder's cap, one
    client's flood leaves room for the rest.

    At most `max_clients` clients are followed, the least recently seen forgotten first
    once their window is empty; should all of them still be uploading, a new client is
    counted with every other such client in one shared share (OVERFLOW): a flood from
    thousands of addresses once made each request walk the whole table, and every new
    client's upload was refused."""

    OVERFLOW = "(clients past the table)"

    def __init__(self, max_bytes: int, max_files: int, max_arriving: int, window_s: float,
                 max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.max_bytes, self.max_files, self.max_arriving = max_bytes, max_files, max_arriving
        self.window_s, self.max_clients, self.clock = window_s, max_clients, clock
        self._clients: collections.OrderedDict[str, _Brought] = collections.OrderedDict()  # least recent first
        self._overflow = _Brought()

    def account(self, client: str) -> str:
        """The name `client`'s uploads are counted under: its own, or OVERFLOW when the
        table holds `max_clients` clients that are all still uploading."""
        if client in self._clients:
            self._clients.move_to_end(client)
            return client
        while len(self._clients) >= self.max_clients:
            oldest, brought = next(iter(self._clients.items()))
            self._expire(brought)
            if brought.slots or brought.arriving:
                return self.OVERFLOW  # the least recently seen is still uploading: all are
            del self._clients[oldest]
        self._clients[client] = _Brought()
        return client

    def begin(self, account: str) -> str | None:
        """Lets one more upload of `account`'s in, counting it as a file; None, or why not
        (for the log)."""
        brought = self._brought(account)
        if brought.arriving >= self.max_arriving:
            return f"{self.max_arriving} of its uploads already arriving"
        if brought.files + 1 > self.max_files:
            return f"{self.max_files} files within {self.window_s:g} s"
        brought.arriving += 1
        self._count(brought, 0, 1)
        return None

    def take(self, account: str, size: int) -> bool:
        """Counts `size` more bytes of `account`'s arriving upload, if its share has room."""
        brought = self._brought(account)
        if brought.bytes + size > self.max_bytes:
            return False
        self._count(brought, size, 0)
        return True

    def end(self, account: str) -> None:
        """One of `account`'s uploads has ended (what it brought stays counted for the window)."""
        self._brought(account).arriving -= 1

    def clients(self) -> int:
        """How many clients the table follows."""
        return len(self._clients)

    def _brought(self, account: str) -> _Brought:
        brought = self._overflow if account == self.OVERFLOW else self._clients[account]
        self._expire(brought)
        return brought

    def _count(self, brought: _Brought, size: int, files: int) -> None:
        second = math.floor(self.clock())
        if brought.slots and brought.slots[-1][0] == second:
            brought.slots[-1][1] += size
            brought.slots[-1][2] += files
        else:
            brought.slots.append([second, size, files])
        brought.bytes += size
        brought.files += files

    def _expire(self, brought: _Brought) -> None:
        now = self.clock()
        while brought.slots and brought.slots[0][0] <= now - self.window_s - 1:
            _, size, files = brought.slots.popleft()
            brought.bytes -= size
            brought.files -= files


class _Arriving:
    """An upload arriving: whose, since when, how many bytes so far, and a future set
    when it is cut off to give its place to another."""

    __slots__ = ("account", "started_at", "received", "evicted")

    def __init__(self, account: str, started_at: float):
        self.account, self.started_at, self.received = account, started_at, 0
        self.evicted: asyncio.Future = asyncio.get_running_loop().create_future()


class BodyLimit:
    """ASGI middleware that bounds request bodies, and uploads above all:

    - a body past its limit (`upload_bytes` on the upload route, `other_bytes`
      elsewhere) is answered 413, one that declares more before a byte is read;
    - a body that sends nothing for `idle_s`, or has brought less than `min_rate`
      bytes/s since it began (after `grace_s`), is cut off (408): a trickled upload
      once held its disk, and its room in the folder, as long as its client liked;
    - an upload may carry at most `files_per_upload` files (413), at most
      `uploads_in_flight` arrive at once; past them, a newcomer waits (at most
      `admission_s`, one per client, first come first served) for a place, and an
      upload that has brought less than `min_rate` bytes/s since it began, `contended_s`
      or more ago, is cut off (503) to give its place to the first one waiting; and each is counted in the
      upload folder (`space`) as its bytes arrive: with no room left, it is refused
      or cut off (503), so the folder never passes its caps;
    - and in its client's share (`shares`: what one client may bring in a minute, and
      how many of its uploads may arrive at once): past it, refused or cut off (503),
      so one client's flood leaves room for the others;
    - a body that is not an upload (JSON) may hold at most `json_items` commas, braces
      and brackets (413): 8 MB of `{},` once parsed to 350 MB that a waiting request
      kept, and took the event loop 1.4 s to parse (a live frame's data URL, the
      largest body the app takes, holds none); and one over `wide_json_bytes` must be
      plain ASCII without \\u escapes (one character past U+FFFF makes Python keep its
      whole string at 4 bytes a character: 32 MB for 8);
    - a request that declares both a length and chunks is refused (400): the server
      frames it one way, a guard reading the length the other;
    - routes in `closed` answer 404 (Gradio's own routes that the app does not use
      and that would run work outside its limits);
    - a client that drops its request costs one log line, not a traceback.
    """

    BUSY = "The app cannot take more uploads just now. Try again in a minute."
    CLIENT_BUSY = "You have uploaded a lot in the last minute. Try again in a minute."

    def __init__(self, app: Callable[..., Awaitable[None]], upload_bytes: int, other_bytes: int,
                 space: UploadSpace | None = None, shares: ClientShares | None = None,
                 upload_path: str = "/gradio_api/upload",
                 closed: tuple[str, ...] = (), files_per_upload: int = 1, uploads_in_flight: int = 32,
                 idle_s: float = 10.0, min_rate: float = 64_000, grace_s: float = 10.0, contended_s: float = 1.0,
                 json_items: int = 20_000, admission_s: float = 10.0, wide_json_bytes: int = 1_000_000):
        self.app, self.space, self.shares, self.upload_path, self.closed = app, space, shares, upload_path, closed
        self.upload_bytes, self.other_bytes = upload_bytes, other_bytes
        self.files_per_upload, self.uploads_in_flight = files_per_upload, uploads_in_flight
        self.arriving: list[_Arriving] = []
        self.json_items, self.admission_s, self.wide_json_bytes = json_items, admission_s, wide_json_bytes
        # Newcomers waiting for a place, first come first served (one per client), and the
        # places given to some of them that they have not yet taken.
        self._waiting: collections.OrderedDict[str, asyncio.Future] = collections.OrderedDict()
        self._given = 0
        self._keeper: asyncio.Task | None = None
        self.idle_s, self.min_rate, self.grace_s, self.contended_s = idle_s, min_rate, grace_s, contended_s

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "").rstrip("/")
        if path in self.closed or _names_a_url(path):
            await self._answer(send, 404, "Not Found")
            return
        # Exactly the upload route (an endpoint may be named "upload" too: /call/upload), and
        # only a POST: any other method is answered 405 by Gradio, but was counted as an
        # upload (its place among those arriving, its client's share) until it ended.
        upload = path == self.upload_path and scope.get("method") == "POST"
        limit = self.upload_bytes if upload else self.other_bytes
        headers = _first_headers(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and b"transfer-encoding" in headers:
            await self._answer(send, 400, "A request may not declare both a length and chunks.")
            return
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._answer(send, 413, f"Request too large: at most {limit / 1e6:g} MB.")
            return
        if not upload:
            await self._guarded(scope, receive, send, limit)
            return
        account = client_address(scope.get("client"))
        if self.shares is not None:
            account = self.shares.account(account)
            why = self.shares.begin(account)
            if why is not None:
                refusals.info("upload", "refused an upload: %s has brought its share (%s)", account, why)
                await self._answer(send, 503, self._share_spent(account))
                return
        files = self.files_per_upload
        arriving = None
        try:
            if not await self._place(account):
                refusals.info("upload", "refused an upload: %d uploads already arriving", len(self.arriving))
                await self._answer(send, 503, self.BUSY)
                return
            arriving = _Arriving(account, asyncio.get_running_loop().time())
            self.arriving.append(arriving)
            if self.space is not None and not await asyncio.to_thread(self.space.begin_upload, files):
                refusals.info("upload", "refused an upload: the upload folder holds its most files")
                await self._answer(send, 503, self.BUSY)
                return
            try:
                await self._guarded(scope, receive, send, limit, arriving=arriving, boundary=_boundary(headers))
            finally:
                if self.space is not None:
                    self.space.end_upload(files)
        finally:
            if arriving is not None and not arriving.evicted.done():
                self.arriving.remove(arriving)
                self._give_places()
            if self.shares is not None:
                self.shares.end(account)

    async def _place(self, account: str) -> bool:
        """A place among the uploads arriving for one of `account`'s: at once if one is
        free and nobody waits; else after those waiting before it, within `admission_s`
        (False: none came, or the client already has one waiting). (Refused at once, a
        newcomer competed with every other: 120 connections sending headers alone, each
        again as soon as it was answered, took each place as it came free, and an honest
        client got 24 refusals in 26.)"""
        if not self._waiting and not self._places_taken():
            return True
        if account in self._waiting:
            return False
        loop = asyncio.get_running_loop()
        given = self._waiting[account] = loop.create_future()
        self._give_places()
        if not given.done() and (self._keeper is None or self._keeper.done()):
            self._keeper = loop.create_task(self._keep_line())
        try:
            await asyncio.wait({given}, timeout=self.admission_s)
        except BaseException:
            if given.done():  # a place given to one that went: to the next
                self._given -= 1
                self._give_places()
            raise
        finally:
            if self._waiting.get(account) is given:
                del self._waiting[account]
        if given.done():
            self._given -= 1
            return True
        return False

    async def _keep_line(self) -> None:
        """While newcomers wait, looks every quarter of `contended_s` for a slow upload to
        cut off for the first of them: one task for the whole line. (Each waiter looking
        for itself, 8,000 waiters from as many addresses took 85 % of a core and the event
        loop answered in up to 4.6 s.)"""
        while self._waiting:
            self._give_places()
            await asyncio.sleep(self.contended_s / 4)

    def _give_places(self) -> None:
        """Gives the free places, and those of slow uploads cut off, to the newcomers
        waiting, first come first served."""
        while self._waiting:
            account, given = next(iter(self._waiting.items()))
            if self._places_taken() and not self._cut_off_slowest():
                return
            del self._waiting[account]
            self._given += 1
            given.set_result(None)

    def _places_taken(self) -> bool:
        """Whether every place is held, by an upload arriving or a newcomer given it."""
        return len(self.arriving) + self._given >= self.uploads_in_flight

    def _cut_off_slowest(self) -> bool:
        """With every place taken: cuts off the upload that has brought the fewest bytes
        a second since it began, if that is under `min_rate` and it began `contended_s`
        ago or more, and frees its place; False if none is that slow. (Five addresses
        that sent headers and no body, reconnecting at each 408, once kept every other
        client's upload refused: a place now costs `min_rate` while others want it.)"""
        now = asyncio.get_running_loop().time()
        slow = [(upload.received / (now - upload.started_at), index) for index, upload in enumerate(self.arriving)
                if now - upload.started_at >= self.contended_s
                and upload.received < self.min_rate * (now - upload.started_at)]
        if not slow:
            return False
        _, index = min(slow)
        upload = self.arriving.pop(index)
        upload.evicted.set_result(None)
        refusals.info("upload", "cut off an upload of %s's (%d bytes in %.1f s) to give its place to another",
                      upload.account, upload.received, now - upload.started_at)
        return True

    async def _guarded(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]], limit: int, arriving: _Arriving | None = None,
                       boundary: bytes | None = None) -> None:
        """Runs the request with its body guarded: an upload's (`arriving`) bytes are
        counted in its client's share and the upload folder (`space.take`) as they
        arrive, any other body's JSON items and characters."""
        loop = asyncio.get_running_loop()
        started_at = loop.time()
        received = parts = items = 0
        tail = b""
        body_done = started = finished = wide = False

        async def guarded_receive() -> dict:
            nonlocal received, parts, items, tail, body_done, wide
            if body_done:  # after the body: a wait for the client to disconnect, unbounded
                return await receive()
            # By when the body must have brought more than it has, at `min_rate` since it began.
            due = started_at + self.grace_s + received / self.min_rate
            message = await self._next_message(receive, max(0.0, min(self.idle_s, due - loop.time())), arriving)
            if message["type"] != "http.request":
                return message
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise Refused(413, f"Request too large: at most {limit / 1e6:g} MB.")
            if arriving is None:  # a JSON body
                items += chunk.count(b",") + chunk.count(b"{") + chunk.count(b"[")
                if items > self.json_items:
                    raise Refused(413, "Request too complex.")
                window = tail[-1:] + chunk
                wide = wide or not chunk.isascii() or b"\\u" in window
                tail = window[-1:]
                if wide and received > self.wide_json_bytes:
                    raise Refused(413, "Request too large for its characters.")
            else:
                arriving.received = received
                if boundary is not None:  # each part of a multipart body starts with "--" + boundary
                    window = tail + chunk
                    parts += window.count(boundary)
                    tail = window[-(len(boundary) - 1):]
                    if parts > self.files_per_upload + 1:  # the parts, and the closing delimiter
                        raise Refused(413, f"At most {self.files_per_upload} file(s) an upload.")
                if self.shares is not None and chunk and not self.shares.take(arriving.account, len(chunk)):
                    raise Refused(503, self._share_spent(arriving.account))
                # Counted at once while there is room; only a prune (a walk of the folder) waits in a thread.
                if self.space is not None and chunk and not (self.space.take(len(chunk), may_prune=False)
                                                             or await asyncio.to_thread(self.space.take, len(chunk))):
                    raise Refused(503, self.BUSY)
            body_done = not message.get("more_body", False)
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started, finished
            started = started or message["type"] == "http.response.start"
            finished = finished or (message["type"] == "http.response.body" and not message.get("more_body", False))
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracked_send)
        except Refused as refusal:
            refusals.info("body", "refused a request body (%s, after %d bytes): %s", scope.get("path"), received,
                          refusal.detail)
            if not started:
                await self._answer(send, refusal.status, refusal.detail)
        except ClientDisconnect:
            refusals.info("dropped", "a client dropped its request while sending it (%s)", scope.get("path"))
        except Exception as error:  # noqa: BLE001 - Gradio's own route failed: one line, not a traceback
            # (Dropping several event streams of one session at once made Gradio's routes
            # fail with a KeyError, 46 tracebacks a round; the client has gone by then.)
            frame = traceback.extract_tb(error.__traceback__)[-1]
            refusals.info("route", "a route failed (%s): %s: %s at %s:%d", scope.get("path"), type(error).__name__,
                          str(error)[:200], os.path.basename(frame.filename), frame.lineno)
            if not started:
                await self._answer(send, 500, "The server could not answer this request.")
        if started and not finished:
            # A response Gradio left open (an event stream for a session it does not know, or
            # one cut short by a failure): ended, rather than a server error logged per request.
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _next_message(self, receive: Callable[[], Awaitable[dict]], timeout: float,
                            arriving: _Arriving | None) -> dict:
        """The body's next message within `timeout` (else 408), unless the upload is cut
        off to give its place to another first (503)."""
        if arriving is None:
            try:
                return await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                raise Refused(408, "The request body stopped arriving.") from None
        receiving = asyncio.ensure_future(receive())
        await asyncio.wait({receiving, arriving.evicted}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if receiving.done() and not arriving.evicted.done():
            return receiving.result()
        receiving.cancel()
        if arriving.evicted.done():
            raise Refused(503, self.BUSY)
        raise Refused(408, "The request body stopped arriving.")

    def _share_spent(self, account: str) -> str:
        return self.BUSY if account == ClientShares.OVERFLOW else self.CLIENT_BUSY

    @staticmethod
    async def _answer(send: Callable[[dict], Awaitable[None]], status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _names_a_url(path: str) -> bool:
    """Gradio's file route (`/gradio_api/file=<path or URL>`) fetches an http(s) URL it is
    given, for anyone, with no read timeout: the app never needs it to, so no such
    request reaches it."""
    for route in ("/gradio_api/file=", "/gradio_api/file/", "/file=", "/file/"):
        if path.startswith(route):
            return path[len(route):].lstrip().lower().startswith(("http:", "https:"))
    return False


def _first_headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Each header's first value, as Starlette reads them (a header sent twice once gave
    this guard one boundary and Gradio's parser another)."""
    headers: dict[bytes, bytes] = {}
    for name, value in raw:
        headers.setdefault(name.lower(), value)
    return headers


def _boundary(headers: Mapping[bytes, bytes]) -> bytes | None:
    """The multipart boundary of a request, as it starts each part ("--" + boundary),
    parsed as Gradio's own multipart parser does (spaces, repeated options)."""
    _, options = parse_options_header(headers.get(b"content-type", b""))
    boundary = options.get(b"boundary")
    return b"--" + boundary if boundary else None
