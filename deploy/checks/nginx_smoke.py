"""Run deploy/nginx/nginx.conf for real against two stub apps on loopback and check its routing.

Usage: python deploy/checks/nginx_smoke.py NGINX_BINARY MIME_TYPES_FILE
Checks: `nginx -t`; / goes to the client and /api/ to the API with the path unchanged; API event
streams arrive unbuffered; a 10 MiB upload passes and a 12 MB one gets 413. Everything listens on
127.0.0.1 and stops within a few seconds.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
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


def local_conf(work: Path, mime: str, port: int, api: int, client: int) -> Path:
    """The real config, with upstreams, listen port and writable paths moved onto this machine."""
    text = (
        CONF.read_text()
        .replace("/tmp/", f"{work}/")
        .replace("/etc/nginx/mime.types", mime)
        .replace("ml-api:8000", f"127.0.0.1:{api}")
        .replace("ml-client:8001", f"127.0.0.1:{client}")
        .replace("listen 8080", f"listen 127.0.0.1:{port}")
    )
    path = work / "nginx.conf"
    path.write_text(text)
    return path


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body)
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
        "/api/v2/other/events": "data: api",
        "/detections/abc/events": "data: client",
    }
    for path, expected in expectations.items():
        status, text = request(port, "GET", path)
        if status != 200 or not text.startswith(expected):
            yield f"GET {path}: expected {expected!r}, got {status} {text[:60]!r}"
    if request(port, "GET", "/nginx-health")[0] != 200:
        yield "GET /nginx-health is not 200"
    delay, line = first_event_delay(port, "/api/v1/detections/abc/events")
    if line != "data: api 0" or delay >= EVENT_GAP_S:
        yield f"API event stream is buffered: first event {line!r} after {delay:.2f}s"
    status, _ = request(port, "POST", "/api/v1/detections", b"x" * (10 * 1024 * 1024))
    if status != 200:
        yield f"a 10 MiB upload got HTTP {status}"
    status, _ = request(port, "POST", "/api/v1/detections", b"x" * 12_000_000)
    if status != 413:
        yield f"a 12 MB upload got HTTP {status}, expected 413"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write(__doc__ or "")
        return 2
    nginx, mime = argv
    api, client = stub_server("api"), stub_server("client")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="nginx-smoke-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # run as root, nginx's workers are `nobody` and buffer bodies here
        conf = local_conf(work, mime, port, api.server_address[1], client.server_address[1])
        base = [nginx, "-e", "stderr", "-p", str(work), "-c", str(conf)]
        if subprocess.run([*base, "-t", "-q"], check=False).returncode != 0:
            sys.stderr.write("  nginx -t failed\n")
            return 1
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
            problems = list(routing_problems(port))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()
        if problems:
            sys.stderr.write((work / "nginx.log").read_text()[-4000:])
    api.shutdown()
    client.shutdown()
    for problem in problems:
        sys.stderr.write(f"  {problem}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
