"""Webhooks against the real stack: a receiver on loopback (allow-listed here) that fails three
times, then succeeds; the signature checked with the `standardwebhooks` verifier; a manual
redelivery (of a task's webhook and of a batch's); a target outside the allow-list refused
without a connection."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import redis
from standardwebhooks import Webhook, WebhookVerificationError

from ml_common.apikeys import ApiKeyStore
from ml_common.batchhooks import FINISH_KEYS, FINISH_SCRIPT, finish_args
from ml_common.records import batch_final_key, batch_key, quota_key
from tests.conftest import LiveStack, launch_stack
from tests.integration.test_batches import tiny_jpeg, wait_batch

pytestmark = pytest.mark.integration

FAILURES_FIRST = 3
WAIT_S = 120
DEADLINE_S = 3.0  # ML_WEBHOOK_TIMEOUT_S of the module's stack


class Receiver:
    """An HTTP server on 127.0.0.1 that answers 500 to its first `fail` requests, then 204."""

    def __init__(self, fail: int) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append((dict(self.headers.items()), body))
                self.send_response(500 if len(receiver.requests) <= fail else 204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/mlprod?src=test"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + WAIT_S
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return list(self.requests)


class Listener:
    """A bare TCP listener that counts the connections it accepts."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.2)
        self.accepted = 0
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


class Trickler(Listener):
    """A receiver on 127.0.0.1 that reads the request, then answers one byte a second, forever:
    no single read ever waits as long as the timeout, the whole answer never comes."""

    def handle(self, conn: socket.socket) -> None:
        threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            received = b""
            while b"\r\n\r\n" not in received and (chunk := conn.recv(65536)):
                received += chunk
            answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 10_000
            for byte in answer:
                if self._stop.wait(1.0):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:  # the sender gave up: what the deadline is for
                    return


@pytest.fixture(scope="module")
def webhook_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    env = {
        "ML_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",  # 127.0.0.2 stays refused
        "ML_WEBHOOK_BACKOFF_S": "0.05",
        "ML_WEBHOOK_BACKOFF_MAX_S": "0.2",
        "ML_WEBHOOK_MAX_ATTEMPTS": "6",
        "ML_WEBHOOK_TIMEOUT_S": str(DEADLINE_S),
    }
    base = tmp_path_factory.mktemp("webhook-stack")
    with launch_stack("rabbitmq-redis", base, env) as live:
        yield live


def submit(live: LiveStack, photo: bytes, callback_url: str) -> str:
    r = httpx.post(
        f"{live.api_url}/api/v1/detections",
        files={"file": ("photo.jpg", photo, "image/jpeg")},
        data={"callback_url": callback_url},
        headers=live.headers(),
        timeout=30,
    )
    assert r.status_code == 202, r.text
    task_id: str = r.json()["task_id"]
    return task_id


def deliveries(
    live: LiveStack, record_id: str, until: int, kind: str = "detections"
) -> dict[str, Any]:
    """GET /api/v1/{kind}/{record_id}/deliveries once it lists `until` attempts."""
    deadline = time.monotonic() + WAIT_S
    while True:
        r = httpx.get(f"{live.api_url}/api/v1/{kind}/{record_id}/deliveries",
                      headers=live.headers(), timeout=10)  # fmt: skip
        body: dict[str, Any] = r.json()
        if r.status_code == 200 and len(body["attempts"]) >= until:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{until} attempts not recorded: {r.status_code} {body}")
        time.sleep(0.1)


@pytest.fixture
def receivers() -> Iterator[Callable[[int], Receiver]]:
    """Make receivers; each is closed after the test."""
    made: list[Receiver] = []

    def make(fail: int) -> Receiver:
        made.append(Receiver(fail))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture(scope="module")
def secret(webhook_stack: LiveStack) -> str:
    r = httpx.get(f"{webhook_stack.api_url}/api/v1/webhooks/secret",
                  headers=webhook_stack.headers(), timeout=10)  # fmt: skip
    assert r.status_code == 200, r.text
    value: str = r.json()["secret"]
    assert value.startswith("whsec_")
    return value


def test_four_attempts_with_one_webhook_id_then_delivered(
    webhook_stack: LiveStack,
    astronaut_jpeg: bytes,
    secret: str,
    receivers: Callable[[int], Receiver],
) -> None:
    receiver = receivers(FAILURES_FIRST)
    task_id = submit(webhook_stack, astronaut_jpeg, receiver.url)
    requests = receiver.wait_for(FAILURES_FIRST + 1)
    assert len(requests) == FAILURES_FIRST + 1
    assert len({headers["webhook-id"] for headers, _ in requests}) == 1
    for headers, body in requests:  # each attempt is signed anew, and verifies
        event = Webhook(secret).verify(body, headers)
        assert event["type"] == "detection.succeeded"
        assert event["data"]["task_id"] == task_id
        assert event["data"]["result"]["detections"]
    found = deliveries(webhook_stack, task_id, FAILURES_FIRST + 1)
    assert found["state"] == "delivered"
    assert found["webhook_id"] == requests[0][0]["webhook-id"]
    assert [a["status_code"] for a in found["attempts"]] == [500, 500, 500, 204]
    assert [a["number"] for a in found["attempts"]] == [1, 2, 3, 4]
    # the task itself was final before the first attempt was sent
    assert webhook_stack.status(task_id).json()["status"] == "succeeded"

    r = httpx.post(f"{webhook_stack.api_url}/api/v1/detections/{task_id}/deliveries",
                   headers=webhook_stack.headers(), timeout=10)  # fmt: skip
    assert r.status_code == 202, r.text
    again = receiver.wait_for(FAILURES_FIRST + 2)
    assert again[-1][0]["webhook-id"] == found["webhook_id"]
    assert len(deliveries(webhook_stack, task_id, FAILURES_FIRST + 2)["attempts"]) == 5


def test_a_tampered_body_or_a_stale_timestamp_fails_verification(
    webhook_stack: LiveStack,
    astronaut_jpeg: bytes,
    secret: str,
    receivers: Callable[[int], Receiver],
) -> None:
    receiver = receivers(0)
    submit(webhook_stack, astronaut_jpeg, receiver.url)
    [(headers, body)] = receiver.wait_for(1)
    verifier = Webhook(secret)
    verifier.verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body.replace(b"detection.succeeded", b"detection.failed"), headers)
    stale = datetime.now(timezone.utc) - timedelta(minutes=10)
    signature = verifier.sign(headers["webhook-id"], stale, body.decode())
    old = {
        **headers,
        "webhook-timestamp": str(int(stale.timestamp())),
        "webhook-signature": signature,
    }
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body, old)
    with pytest.raises(WebhookVerificationError):  # another key's secret
        Webhook("whsec_" + "QUJD" * 8).verify(body, headers)


def test_a_target_outside_the_allow_list_is_refused_without_a_connection(
    webhook_stack: LiveStack, astronaut_jpeg: bytes
) -> None:
    listener = Listener("127.0.0.2")  # loopback, but not the allow-listed 127.0.0.1/32
    try:
        task_id = submit(webhook_stack, astronaut_jpeg, f"http://127.0.0.2:{listener.port}/h")
        found = deliveries(webhook_stack, task_id, 1)
        assert found["state"] == "failed"
        [attempt] = found["attempts"]
        assert attempt["status_code"] is None
        assert "may not be called" in attempt["error"]
        assert listener.accepted == 0
    finally:
        listener.close()


def test_deliveries_of_a_task_without_a_callback_are_404(
    webhook_stack: LiveStack, astronaut_jpeg: bytes
) -> None:
    r = webhook_stack.submit(astronaut_jpeg)
    task_id = r.json()["task_id"]
    webhook_stack.wait_final(task_id)
    url = f"{webhook_stack.api_url}/api/v1/detections/{task_id}/deliveries"
    r = httpx.get(url, headers=webhook_stack.headers(), timeout=10)
    assert r.status_code == 404
    assert r.json()["code"] == "no_webhook"
    other = webhook_stack.new_key("someone-else")
    r = httpx.get(url, headers=webhook_stack.headers(other), timeout=10)
    assert r.json()["code"] == "task_not_found"


def test_a_keys_default_callback_gets_the_event_of_an_upload_without_one(
    webhook_stack: LiveStack, astronaut_jpeg: bytes, receivers: Callable[[int], Receiver]
) -> None:
    receiver = receivers(0)
    store = ApiKeyStore.from_settings(webhook_stack.settings)
    plain, _ = store.create("with-default-callback", callback_url=receiver.url)
    headers = webhook_stack.headers(plain)
    r = httpx.post(f"{webhook_stack.api_url}/api/v1/detections",
                   files={"file": ("photo.jpg", astronaut_jpeg, "image/jpeg")},
                   headers=headers, timeout=30)  # fmt: skip
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    [(sent, body)] = receiver.wait_for(1)
    r = httpx.get(f"{webhook_stack.api_url}/api/v1/webhooks/secret", headers=headers, timeout=10)
    event = Webhook(r.json()["secret"]).verify(body, sent)
    assert event["type"] == "detection.succeeded"
    assert event["data"]["task_id"] == task_id


def test_a_batch_with_a_callback_gets_one_signed_batch_completed(
    webhook_stack: LiveStack, secret: str, receivers: Callable[[int], Receiver]
) -> None:
    receiver = receivers(0)
    files = [("files", (f"p{i}.jpg", tiny_jpeg(i), "image/jpeg")) for i in range(3)]
    files.append(("files", ("notes.txt", b"not an image", "text/plain")))  # refused at intake
    r = httpx.post(f"{webhook_stack.api_url}/api/v1/batches", files=files,
                   data={"callback_url": receiver.url}, headers=webhook_stack.headers(),
                   timeout=120)  # fmt: skip
    assert r.status_code == 202, r.text
    batch_id = r.json()["batch_id"]
    [(headers, body)] = receiver.wait_for(1)
    event = Webhook(secret).verify(body, headers)
    assert event["type"] == "batch.completed"
    assert event["data"] == {
        "batch_id": batch_id,
        "total": 4,
        "counts": {"succeeded": 3, "failed": 1, "cancelled": 0},
    }
    assert wait_batch(webhook_stack, batch_id)["finished"]  # every item was final before it
    found = deliveries(webhook_stack, batch_id, 1, "batches")
    assert found["state"] == "delivered" and found["webhook_id"] == headers["webhook-id"]
    assert len(receiver.requests) == 1  # one event, though four items ended


def test_a_batchs_deliveries_are_listed_and_redelivered_to_its_key_only(
    webhook_stack: LiveStack, receivers: Callable[[int], Receiver]
) -> None:
    receiver = receivers(1)  # the first attempt gets 500, the retry 204
    files = [("files", (f"d{i}.jpg", tiny_jpeg(10 + i), "image/jpeg")) for i in range(2)]
    r = httpx.post(f"{webhook_stack.api_url}/api/v1/batches", files=files,
                   data={"callback_url": receiver.url}, headers=webhook_stack.headers(),
                   timeout=120)  # fmt: skip
    assert r.status_code == 202, r.text
    batch_id = r.json()["batch_id"]
    found = deliveries(webhook_stack, batch_id, 2, "batches")
    assert found["batch_id"] == batch_id and found["event"] == "batch.completed"
    assert found["state"] == "delivered" and found["url"] == receiver.url
    assert [(a["number"], a["status_code"]) for a in found["attempts"]] == [(1, 500), (2, 204)]
    assert found["attempts"][0]["error"] == "HTTP 500"

    url = f"{webhook_stack.api_url}/api/v1/batches/{batch_id}/deliveries"
    r = httpx.post(url, headers=webhook_stack.headers(), timeout=10)
    assert r.status_code == 202, r.text
    assert r.json()["webhook_id"] == found["webhook_id"]
    again = deliveries(webhook_stack, batch_id, 3, "batches")
    assert (again["attempts"][-1]["number"], again["attempts"][-1]["status_code"]) == (3, 204)
    sent = receiver.wait_for(3)
    assert [headers["webhook-id"] for headers, _ in sent] == [found["webhook_id"]] * 3

    other = webhook_stack.headers(webhook_stack.new_key("not-the-batchs-owner"))
    for method in ("GET", "POST"):
        r = httpx.request(method, url, headers=other, timeout=10)
        assert (r.status_code, r.json()["code"]) == (404, "batch_not_found"), method


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example/x", "https://user:pw@hooks.example/x", "https://h/" + "a" * 2050]
)
def test_a_bad_batch_callback_url_is_422_and_nothing_is_stored(
    webhook_stack: LiveStack, url: str
) -> None:
    key = webhook_stack.new_key(f"bad-batch-hook-{len(url)}-{url[:3]}")
    key_id = ApiKeyStore.from_settings(webhook_stack.settings).check(key)
    assert key_id is not None
    r = httpx.post(f"{webhook_stack.api_url}/api/v1/batches",
                   files=[("files", ("p.jpg", tiny_jpeg(7), "image/jpeg"))],
                   data={"callback_url": url}, headers=webhook_stack.headers(key),
                   timeout=60)  # fmt: skip
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_callback_url"
    client = redis.Redis.from_url(str(webhook_stack.settings.result_backend))
    assert not client.exists(quota_key(key_id.key_id))  # no quota taken, so no batch began


def test_items_ending_at_once_complete_their_batch_exactly_once(webhook_stack: LiveStack) -> None:
    client = redis.Redis.from_url(str(webhook_stack.settings.result_backend))
    batch_id, items = f"race-{time.time_ns()}", 64
    client.hset(batch_key(batch_id), mapping={"owner": "o", "callback_url": "http://h/x"})
    client.expire(batch_key(batch_id), 60)
    sealed = finish_args(batch_id, [], "", 60, seal_total=items)
    client.eval(FINISH_SCRIPT, FINISH_KEYS, *sealed)  # sealed first

    def finish(n: int) -> int:
        args = finish_args(batch_id, [f"t{n % items}"], "succeeded", 60)
        return int(client.eval(FINISH_SCRIPT, FINISH_KEYS, *args))

    with ThreadPoolExecutor(16) as pool:  # every item twice, as a redelivered task would
        won = list(pool.map(finish, range(2 * items)))
    assert sum(won) == 1
    assert client.hget(batch_key(batch_id), "final:succeeded") == str(items).encode()
    client.delete(batch_key(batch_id), batch_final_key(batch_id))


def test_a_trickling_receiver_is_cut_at_the_deadline_and_detection_never_waits(
    webhook_stack: LiveStack, astronaut_jpeg: bytes, record_property: Any
) -> None:
    """Two callbacks to a receiver that sends a byte a second: each attempt ends at
    ML_WEBHOOK_TIMEOUT_S in all (not per read), is recorded and retried; meanwhile another
    upload is detected (the stack's one detection process never runs a delivery)."""
    record_property("case", "a webhook receiver trickling one byte a second (2 callbacks)")
    slow = Trickler("127.0.0.1")
    try:
        url = f"http://127.0.0.1:{slow.port}/hook"
        hooked = [submit(webhook_stack, astronaut_jpeg, url) for _ in range(2)]
        deadline = time.monotonic() + WAIT_S
        while slow.accepted < 2:  # both deliveries are being trickled to
            assert time.monotonic() < deadline, "the deliveries never connected"
            time.sleep(0.1)
        other = webhook_stack.submit(astronaut_jpeg).json()["task_id"]
        # before: the deliveries ran on the detection queue, and this waited for the task limit
        assert webhook_stack.wait_final(other, timeout_s=20)["status"] == "succeeded"
        found = [deliveries(webhook_stack, task_id, 2) for task_id in hooked]
    finally:
        slow.close()
    for delivery in found:
        first, second = delivery["attempts"][:2]
        assert first["status_code"] is None and second["number"] == 2
        assert first["error"] == f"TimeoutError: no whole answer within {DEADLINE_S:g} s"
    seen = f"each attempt cut at the deadline, recorded ('{first['error']}') and retried"
    record_property("observed", f"{seen}; another upload detected meanwhile")
