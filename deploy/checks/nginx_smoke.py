"""Run deploy/nginx/nginx.conf for real against two stub apps on loopback and check its routing.

Usage: python deploy/checks/nginx_smoke.py NGINX_BINARY MIME_TYPES_FILE
Checks: `nginx -t`; / goes to the client, /api/ to the API and /flower/ to Flower with the path
unchanged (a websocket's Upgrade headers too), no /metrics is served; API event streams
arrive unbuffered; a 10 MiB upload passes and a 12 MB one gets 413. Everything listens on
127.0.0.1 and stops within a few seconds.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "nginx" / "nginx.conf"
EVENT_GAP_S = 1.5


def stub_server(name: str) -> ThreadingHTTPServer:
    """An HTTP server on a free loopback port that names itself and echoes the path."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.endswith("/events"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for i in range(2):
                    self.wfile.write(f"data: {name} {i}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(EVENT_GAP_S)
                return
            if self.path.endswith("/headers"):
                seen = ("Host", "X-Forwarded-For", "X-Forwarded-Host")
                self._reply(" ".join(f"{h}={self.headers.get(h)}" for h in seen))
                return
            if self.path.endswith("/upgrade"):
                seen = ("Upgrade", "Connection")
                self._reply(" ".join(f"{h}={self.headers.get(h)}" for h in seen))
                return
            self._reply(f"{name} {self.path}")

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._reply(f"{name} {self.path}")

        def _reply(self, text: str) -> None:
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_conf(
    work: Path, mime: str, port: int, api: int, client: int, tls_port: int = 0, flower: int = 0
) -> Path:
    """The real config, with upstreams, listen port and writable paths moved onto this machine.

    Every file of deploy/nginx/ is copied into `work` (where the includes then point); with a
    `tls_port`, the one returned is tls.conf (HTTPS there), else nginx.conf.
    """
    for source in CONF.parent.glob("*.conf"):
        text = (
            source.read_text()
            .replace("/tmp/", f"{work}/")
            .replace("/etc/nginx/mlprod/", f"{work}/")
            .replace("/etc/nginx/tls/", f"{work}/tls/")
            .replace("/etc/nginx/mime.types", mime)
            .replace("ml-api:8000", f"127.0.0.1:{api}")
            .replace("ml-client:8001", f"127.0.0.1:{client}")
            .replace("flower:5555", f"127.0.0.1:{flower or free_port()}")
            .replace("listen 8080", f"listen 127.0.0.1:{port}")
            .replace("listen 8443", f"listen 127.0.0.1:{tls_port or free_port()}")
        )
        (work / source.name).write_text(text)
    # what deploy/nginx/start.sh writes in the container; the upstreams here are addresses
    (work / "resolver.conf").write_text("resolver 127.0.0.1 valid=10s ipv6=off;\n")
    return work / ("tls.conf" if tls_port else "nginx.conf")


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def first_event_delay(port: int, path: str) -> tuple[float, str]:
    """Seconds until the first event line arrives, and that line."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        start = time.monotonic()
        conn.request("GET", path)
        line = conn.getresponse().readline().decode().strip()
        return time.monotonic() - start, line
    finally:
        conn.close()


def routing_problems(port: int) -> Iterator[str]:
    expectations = {
        "/": "client /",
        "/login": "client /login",
        "/api/v1/detections": "api /api/v1/detections",
        "/readyz": "api /readyz",
        "/api/v2/other/events": "data: api",
        "/detections/abc/events": "data: client",
        "/flower/": "flower /flower/",
        "/flower/api/workers?refresh=1": "flower /flower/api/workers?refresh=1",
    }
    for path, expected in expectations.items():
        status, text = request(port, "GET", path)
        if status != 200 or not text.startswith(expected):
            yield f"GET {path}: expected {expected!r}, got {status} {text[:60]!r}"
    forged = {"Host": "evil.example", "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil"}
    for path in ("/headers", "/api/v1/headers"):
        _, text = request(port, "GET", path, headers=forged)
        if text != "Host=localhost X-Forwarded-For=127.0.0.1 X-Forwarded-Host=None":
            yield f"GET {path}: the apps must see the server name and nginx's peer, saw {text!r}"
    if request(port, "GET", "/nginx-health")[0] != 200:
        yield "GET /nginx-health is not 200"
    for path in ("/metrics", "//metrics", "/%6detrics", "/flower/metrics", "/flower//metrics",
                 "/flower/%6detrics"):  # fmt: skip
        status, text = request(port, "GET", path)
        if status != 404 or text.startswith(("api", "client", "flower")):
            yield f"GET {path}: metrics must stay inside, got {status} {text[:60]!r}"
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
    _, text = request(port, "GET", "/flower/api/upgrade", headers=upgrade)
    if text != "Upgrade=websocket Connection=upgrade":
        yield f"a websocket to Flower must keep its Upgrade headers, saw {text!r}"
    delay, line = first_event_delay(port, "/api/v1/detections/abc/events")
    if line != "data: api 0" or delay >= EVENT_GAP_S:
        yield f"API event stream is buffered: first event {line!r} after {delay:.2f}s"
    status, _ = request(port, "POST", "/api/v1/detections", b"x" * (10 * 1024 * 1024))
    if status != 200:
        yield f"a 10 MiB upload got HTTP {status}"
    status, _ = request(port, "POST", "/api/v1/detections", b"x" * 12_000_000)
    if status != 413:
        yield f"a 12 MB upload got HTTP {status}, expected 413"


def self_signed(work: Path) -> None:
    """A throwaway certificate for localhost where tls.conf expects the real one."""
    tls = work / "tls"
    tls.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=localhost", "-keyout", str(tls / "privkey.pem"), "-out", str(tls / "fullchain.pem")],
        check=True, capture_output=True,
    )  # fmt: skip


def tls_problems(port: int, tls_port: int) -> Iterator[str]:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", tls_port, timeout=10, context=ssl._create_unverified_context()
    )
    try:
        conn.request("GET", "/api/v1/headers", headers={"Host": "evil.example"})
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    if not text.startswith("Host=localhost X-Forwarded-For=127.0.0.1"):
        yield f"HTTPS GET /api/v1/headers: {text!r}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/login?next=1", headers={"Host": "evil.example"})
        response = conn.getresponse()
        location = response.getheader("Location")
    finally:
        conn.close()
    if response.status != 308 or location != "https://localhost/login?next=1":
        yield f"plain HTTP must redirect to the configured name: {response.status} {location}"


def run_nginx(
    nginx: str, work: Path, conf: Path, port: int, check: Callable[[], Iterator[str]]
) -> list[str]:
    """`nginx -t`, then nginx in the foreground while `check` runs; the problems found."""
    base = [nginx, "-e", "stderr", "-p", str(work), "-c", str(conf)]
    if subprocess.run([*base, "-t", "-q"], check=False).returncode != 0:
        return [f"nginx -t {conf.name} failed"]
    log = (work / "nginx.log").open("w")
    proc = subprocess.Popen([*base, "-g", "daemon off;"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        problems = list(check())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
    if problems:
        sys.stderr.write((work / "nginx.log").read_text()[-4000:])
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write(__doc__ or "")
        return 2
    nginx, mime = argv
    api, client, flower = stub_server("api"), stub_server("client"), stub_server("flower")
    ports = (api.server_address[1], client.server_address[1])
    problems = []
    for tls in (False, True):
        port, tls_port = free_port(), free_port() if tls else 0
        with tempfile.TemporaryDirectory(prefix="nginx-smoke-") as tmp:
            work = Path(tmp)
            work.chmod(0o755)  # run as root, nginx's workers are `nobody` and buffer bodies here
            conf = local_conf(work, mime, port, *ports, tls_port, flower.server_address[1])
            if tls:
                self_signed(work)
            check = (
                partial(tls_problems, port, tls_port) if tls else partial(routing_problems, port)
            )
            problems += run_nginx(nginx, work, conf, port, check)
    for server in (api, client, flower):
        server.shutdown()
    for problem in problems:
        sys.stderr.write(f"  {problem}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
