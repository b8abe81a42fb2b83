"""Sign-in limits of a real web client process, directly and behind the real nginx config:
attempts are counted before the password check, the owner is never locked out, and the
address the limits count is the one nginx saw, not one the client wrote."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from argon2 import PasswordHasher

from ml_tools.devstack import Stack, free_port, wait_http
from tests.conftest import ROOT, need, need_redis, redis_db, storage_env

sys.path.insert(0, str(ROOT / "deploy" / "checks"))

from nginx_smoke import local_conf

pytestmark = pytest.mark.integration

CLIENT_DB = redis_db(13)  # a database of its own, flushed after each test
PASSWORD = "the-owners-password"
LIMIT = 5  # ML_CLIENT_LOGIN_MAX_FAILURES: tries of one user name from one address per window
# where scripts/validate_deploy.sh (run by .ci/run before the tests) unpacks Debian's nginx
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
NGINX_CACHE = CACHE / "mlprod-validate-deploy" / "nginx"


@dataclass
class WebClient:
    url: str
    user: str
    log: Path

    def session(self, address: str | None = None) -> httpx.Client:
        """A browser from `address` (as X-Forwarded-For, which a trusted proxy would set)."""
        headers = {"X-Forwarded-For": address} if address else {}
        limits = httpx.Limits(max_connections=64)
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, limits=limits)

    def sign_in(self, browser: httpx.Client, password: str, user: str | None = None) -> int:
        page = browser.get("/login").text
        match = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert match, page[:300]
        data = {"username": user or self.user, "password": password, "csrf_token": match[1]}
        return browser.post("/login", data=data).status_code


@contextmanager
def started_web_client(tmp_path: Path, proxy_headers: bool) -> Iterator[WebClient]:
    need_redis()
    user = f"admin-{uuid.uuid4().hex[:6]}"
    cheap = PasswordHasher(time_cost=2, memory_cost=8192, parallelism=1)
    env = {
        "ML_ENVIRONMENT": "development",
        **storage_env(tmp_path / "storage"),
        "ML_RESULT_BACKEND": CLIENT_DB,
        "ML_CLIENT_USERS": f"{user}:{cheap.hash(PASSWORD)}",
        "ML_CLIENT_LOGIN_MAX_FAILURES": str(LIMIT),
    }
    stack = Stack(env, tmp_path / "logs", proxy_headers=proxy_headers)
    try:
        stack.start_client("mlp_unused")  # signing in never calls the API
        wait_http(f"{stack.client_url}/healthz", 60, stack.procs["client"])
        yield WebClient(stack.client_url, user, tmp_path / "logs" / "client.log")
    finally:
        stack.stop()
        redis.Redis.from_url(CLIENT_DB).flushdb()


@pytest.fixture
def web_client(tmp_path: Path) -> Iterator[WebClient]:
    """The web client as behind a proxy: it believes X-Forwarded-For from loopback."""
    with started_web_client(tmp_path, proxy_headers=True) as client:
        yield client


def test_concurrent_wrong_passwords_reach_the_password_check_at_most_the_limit(
    web_client: WebClient,
) -> None:
    """40 concurrent wrong passwords: at most the limit get a password check, the rest 429"""
    with web_client.session("203.0.113.7") as browser:
        browser.get("/login")  # one session (and CSRF token) for all of them, as a script would
        with ThreadPoolExecutor(40) as pool:
            codes = list(pool.map(lambda _: web_client.sign_in(browser, "guess"), range(40)))
    assert sorted(set(codes)) == [401, 429], codes
    assert codes.count(401) <= LIMIT, codes
    assert web_client.log.read_text().count("failed sign-in") == codes.count(401)


def test_an_attackers_failures_do_not_lock_the_owner_out(web_client: WebClient) -> None:
    """Failures from many addresses do not stop the right password from a clean address"""
    attackers = [f"198.51.100.{i}" for i in range(1, 7)]
    codes = []
    for address in attackers:  # 30 wrong passwords: past every per-user limit
        with web_client.session(address) as browser:
            codes += [web_client.sign_in(browser, "guess") for _ in range(LIMIT)]
    assert codes.count(401) <= 4 * LIMIT + len(attackers), codes  # one try per fresh address
    assert 429 in codes
    with web_client.session(attackers[0]) as browser:  # an attacker's address stays limited
        assert web_client.sign_in(browser, PASSWORD) == 429
    with web_client.session("192.0.2.10") as browser:  # the owner, elsewhere: signed in
        assert web_client.sign_in(browser, PASSWORD) == 303
        assert browser.get("/").status_code == 200
    with web_client.session("192.0.2.99") as browser:  # a fresh address gets one try, no more
        assert web_client.sign_in(browser, "guess") == 401
        assert web_client.sign_in(browser, "guess") == 429


def test_make_runs_client_takes_no_forwarded_for_from_loopback(tmp_path: Path) -> None:
    """`make run`'s web client: 30 X-Forwarded-For addresses from loopback count as one"""
    with started_web_client(tmp_path, proxy_headers=False) as direct:
        codes = []
        for i in range(30):
            with direct.session(f"203.0.113.{i + 1}") as browser:
                codes.append(direct.sign_in(browser, "guess"))
        log = direct.log.read_text()
    assert codes.count(401) == LIMIT and codes[-1] == 429, codes
    assert "from 203.0.113." not in log


# -- behind the real nginx config ----------------------------------------------------------


def nginx_binary() -> str | None:
    cached = NGINX_CACHE / "usr/sbin/nginx"
    return str(cached) if cached.exists() else shutil.which("nginx")


@pytest.fixture
def proxied(web_client: WebClient, tmp_path: Path) -> Iterator[WebClient]:
    """deploy/nginx/nginx.conf in front of the web client, as compose runs it."""
    nginx = nginx_binary()
    need(nginx is not None, "no nginx: run scripts/validate_deploy.sh (or apt-get install nginx)")
    assert nginx is not None
    mime = next(
        (str(p) for p in (NGINX_CACHE / "etc/nginx/mime.types", Path("/etc/nginx/mime.types"))
         if p.exists()), None,
    )  # fmt: skip
    need(mime is not None, "no mime.types beside nginx")
    work = tmp_path / "nginx"
    work.mkdir()
    work.chmod(0o755)
    port, client_port = free_port(), int(web_client.url.rsplit(":", 1)[1])
    conf = local_conf(work, str(mime), port, free_port(), client_port)
    base = [nginx, "-e", "stderr", "-p", str(work), "-c", str(conf)]
    proc = subprocess.Popen(
        [*base, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/nginx-health", 10, proc)
        yield WebClient(f"http://127.0.0.1:{port}", web_client.user, web_client.log)
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_forged_forwarded_for_does_not_escape_the_address_limit(proxied: WebClient) -> None:
    """Through nginx, a client-written X-Forwarded-For neither changes nor forges the address"""
    codes = []
    for i in range(4 * LIMIT + 5):  # password spraying, each try from a "new" address
        with proxied.session(f"10.{i}.0.1") as browser:
            codes.append(proxied.sign_in(browser, "guess", user=f"user{i}"))
    assert codes.count(401) == 4 * LIMIT, codes  # one address: nginx's peer, 127.0.0.1
    assert codes[-1] == 429
    log = proxied.log.read_text()
    assert "from 127.0.0.1" in log
    assert "from 10." not in log


def test_the_web_client_never_redirects_to_the_request_host(web_client: WebClient) -> None:
    """A trailing slash with a forged Host: no redirect to that host from the web client"""
    with web_client.session() as browser:
        for path in ("/login/", "/healthz/", "/static"):
            r = browser.get(path, headers={"Host": "evil.example"})
            assert "evil.example" not in r.headers.get("location", ""), (path, r.headers)
            assert r.status_code == 404, (path, r.status_code)


def test_addresses_of_one_ipv6_64_count_as_one(web_client: WebClient) -> None:
    """Password spraying from one IPv6 /64, a new address each try: limited as one address"""
    codes = []
    for i in range(4 * LIMIT + 5):
        with web_client.session(f"2001:db8:0:1::{i + 1:x}") as browser:
            codes.append(web_client.sign_in(browser, "guess", user=f"user{i}"))
    assert codes.count(401) == 4 * LIMIT, codes
    with web_client.session("2001:db8:0:2::1") as browser:  # the next /64 is another address
        assert web_client.sign_in(browser, "guess", user="user0") == 401
