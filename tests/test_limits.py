"""jaxkp.limits' guards on their own, over a bare ASGI app (the running app's are in
test_app_security.py and test_app_video_live.py)."""

from __future__ import annotations

import asyncio
import logging
import time

from jaxkp.limits import BodyLimit, QuietLog


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


def test_refusals_are_logged_at_most_once_a_period_with_a_count_of_the_rest(caplog):
    quiet = QuietLog(every_s=0.3)
    with caplog.at_level(logging.INFO, logger="jaxkp.app"):
        for index in range(100):
            quiet.info("refused %d", index)
        time.sleep(0.35)
        quiet.info("refused %d", 100)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["refused 0", "refused 100 (and 99 more refusals left out of the log)"]
