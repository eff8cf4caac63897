"""jaxkp.limits' guards on their own, over a bare ASGI app (the running app's are in
test_app_security.py and test_app_video_live.py)."""

from __future__ import annotations

import asyncio
import logging
import time

from jaxkp.limits import BodyLimit, ClientShares, QuietLog, client_address


def run(app, path: str = "/gradio_api/queue/data", body: bytes = b"") -> list[dict]:
    """One GET through `app`; the messages it sent."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "client": ("203.0.113.1", 1)}
    asyncio.run(app(scope, receive, send))
    return sent


def test_a_route_that_fails_gets_one_log_line_and_its_client_a_plain_500(caplog):
    async def failing(scope, receive, send):  # as Gradio's routes failed when a session's streams all dropped
        raise KeyError("a-session-hash")

    with caplog.at_level(logging.INFO, logger="jaxkp.app"):
        sent = run(BodyLimit(failing, upload_bytes=1000, other_bytes=1000))
    assert sent[0]["status"] == 500 and b"could not answer" in sent[1]["body"]
    (record,) = [record for record in caplog.records if "route failed" in record.getMessage()]
    assert "KeyError" in record.getMessage() and record.exc_info is None


def test_a_route_that_answers_is_left_alone():
    async def answering(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    assert [message.get("status") for message in run(BodyLimit(answering, 1000, 1000))] == [204, None]


def test_refusals_are_logged_at_most_once_a_period_for_each_kind_with_a_count_of_the_rest(caplog):
    quiet = QuietLog(every_s=0.3)
    with caplog.at_level(logging.INFO, logger="jaxkp.app"):
        for index in range(100):
            quiet.info("line", "refused %d", index)
        quiet.info("route", "a route failed")  # another kind: not hidden by the flood
        time.sleep(0.35)
        quiet.info("line", "refused %d", 100)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["refused 0", "a route failed", "refused 100 (and 99 more like it left out of the log)"]


async def reading(scope, receive, send):
    """An app that reads the whole body, then answers 200."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_json_body_of_too_many_items_is_refused_before_it_is_parsed():
    items = b"[" + b",".join([b"{}"] * 30_000) + b"]"
    sent = run(BodyLimit(reading, upload_bytes=10**7, other_bytes=10**7), body=items)
    assert sent[0]["status"] == 413 and b"too complex" in sent[1]["body"]
    frame = b'{"data": [{"url": "data:image/jpeg;base64,' + b"A" * 3_000_000 + b'"}]}'
    assert run(BodyLimit(reading, upload_bytes=10**7, other_bytes=10**7), body=frame)[0]["status"] == 200
    # One character past U+FFFF, raw or escaped, makes Python keep the whole string at 4 bytes
    # a character: a large body must be plain ASCII (a small one, a file's name, need not).
    for wide in ("\U0001f600".encode(), b"\\ud83d\\ude00"):
        body = b'{"data": ["' + wide + b"A" * 3_000_000 + b'"]}'
        sent = run(BodyLimit(reading, upload_bytes=10**7, other_bytes=10**7), body=body)
        assert sent[0]["status"] == 413 and b"characters" in sent[1]["body"], wide
    small = '{"data": [{"path": "café 😀.jpg"}]}'.encode()
    assert run(BodyLimit(reading, upload_bytes=10**7, other_bytes=10**7), body=small)[0]["status"] == 200


def test_newcomers_wait_in_turn_for_an_upload_place_and_a_silent_upload_gives_its_own():
    """One place. A holds it and sends nothing; B arrives and waits; B's client's second
    upload is refused at once (one waiting per client); once A has been silent for
    `contended_s`, A is cut off (503) and B gets the place and its answer."""
    limit = BodyLimit(reading, upload_bytes=10**6, other_bytes=10**6, uploads_in_flight=1, contended_s=0.3,
                      admission_s=3.0)

    async def upload(client: str, body: bytes | None, sent: list) -> None:
        async def receive() -> dict:
            if body is None:
                await asyncio.sleep(60)  # headers, and then nothing
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/gradio_api/upload", "client": (client, 1),
                 "headers": [(b"content-type", b"multipart/form-data; boundary=zz")]}
        await limit(scope, receive, send)

    async def scenario() -> tuple[list, list, list, float]:
        a, b, b_again = [], [], []
        holder = asyncio.create_task(upload("203.0.113.1", None, a))
        await asyncio.sleep(0.05)
        start = asyncio.get_running_loop().time()
        newcomer = asyncio.create_task(upload("203.0.113.2", b"--zz--", b))
        await asyncio.sleep(0.05)
        await upload("203.0.113.2", b"--zz--", b_again)  # its client already waits
        await asyncio.wait_for(asyncio.gather(holder, newcomer), 5)
        return a, b, b_again, asyncio.get_running_loop().time() - start

    a, b, b_again, waited = asyncio.run(scenario())
    assert b_again[0]["status"] == 503
    assert a[0]["status"] == 503 and b[0]["status"] == 200
    assert 0.2 < waited < 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_brings_at_most_its_share_within_the_window_and_others_are_counted_apart():
    clock = Clock()
    shares = ClientShares(max_bytes=100, max_files=3, max_arriving=2, window_s=10, clock=clock)
    assert [shares.account(client) for client in "abc"] == ["a", "b", "c"]
    assert shares.begin("a") is None and shares.take("a", 60) and not shares.take("a", 41)
    assert shares.take("a", 40)  # exactly its share
    assert shares.begin("b") is None and shares.take("b", 100)  # another client's share is its own
    shares.end("a")
    clock.now += 5
    assert not shares.take("a", 1)  # still within the window
    clock.now += 7  # the first second's bytes are past the window
    assert shares.take("a", 100)
    # Files: at most three begun within the window; two arriving at once.
    assert [shares.begin("c") for _ in range(2)] == [None, None]
    assert "arriving" in shares.begin("c")
    shares.end("c")
    assert shares.begin("c") is None  # its third file
    shares.end("c")
    assert "files" in shares.begin("c")


def test_the_clients_followed_are_bounded_and_past_them_new_ones_share_one_share():
    clock = Clock()
    shares = ClientShares(max_bytes=100, max_files=10, max_arriving=2, window_s=10, max_clients=3, clock=clock)
    for client in "abc":
        assert shares.account(client) == client and shares.begin(client) is None
    shares.end("a")
    # All three still within their window: a new client is counted in the shared overflow share.
    assert shares.account("d") == shares.account("e") == ClientShares.OVERFLOW
    assert shares.begin(ClientShares.OVERFLOW) is None and shares.take(ClientShares.OVERFLOW, 100)
    assert not shares.take(ClientShares.OVERFLOW, 1)
    shares.end(ClientShares.OVERFLOW)
    assert shares.take("b", 100)  # the followed clients keep their own
    shares.end("b")
    clock.now += 12
    # a's window is empty and it is the least recently seen: forgotten for the new client;
    # then b (c still uploading is kept).
    assert shares.account("d") == "d" and shares.account("e") == "e"
    assert shares.account("f") == ClientShares.OVERFLOW and shares.clients() == 3  # c, d, e
    assert shares.take("c", 100)  # c's upload still counts as its own


def test_a_client_is_its_address_and_an_ipv6_one_its_64_network():
    assert client_address(("203.0.113.5", 5000)) == "203.0.113.5"
    assert client_address(("2001:db8:1:2:aaaa::1", 1)) == client_address(("2001:db8:1:2:bbbb::9", 2))
    assert client_address(("2001:db8:1:3::1", 1)) != client_address(("2001:db8:1:2::1", 1))
    assert client_address(("::ffff:203.0.113.5", 1)) == "203.0.113.5"
    assert client_address(None) == "unknown"
