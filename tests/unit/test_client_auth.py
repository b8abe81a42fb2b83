"""Web client sign-in: sessions, CSRF, rate limits, redirect vs 401, and security headers."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ml_client.app import create_app
from ml_client.settings import ClientSettings

PASSWORD = "a-fine-password"
CHEAP = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


def _unreachable_api(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("no API in these tests", request=request)


@pytest.fixture
def user() -> str:
    # a fresh name per test, so failed-login counters in Redis never leak between tests
    return f"alice-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(tmp_path: Path, user: str, redis_url: str) -> ClientSettings:
    return ClientSettings(
        _env_file=None,
        storage_dir=tmp_path,
        result_backend=redis_url,
        secret_key=SecretStr("test-secret-" + uuid.uuid4().hex),
        client_users=SecretStr(f"{user}:{CHEAP.hash(PASSWORD)}"),
        client_login_max_failures=3,
        client_login_window_s=60,
    )


@pytest.fixture
def client(settings: ClientSettings) -> Iterator[TestClient]:
    app = create_app(settings, api_transport=httpx.MockTransport(_unreachable_api))
    # a per-test client address keeps the per-address counter of each test apart
    with TestClient(app, client=(f"10.0.{uuid.uuid4().int % 250}.1", 5000)) as client:
        yield client
    r = redis.Redis.from_url(str(settings.result_backend))
    r.delete(*r.keys("mlprod:client:login:*10.0.*") or ["none"])
    r.close()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def sign_in(client: TestClient, user: str, password: str = PASSWORD) -> httpx.Response:
    token = csrf_of(client.get("/login").text)
    data = {"username": user, "password": password, "csrf_token": token}
    return client.post("/login", data=data, follow_redirects=False)


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}


def test_pages_redirect_to_login_when_signed_out(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


@pytest.mark.parametrize("path", ["/app/tasks", f"/app/tasks/{uuid.uuid4()}/events"])
def test_app_endpoints_answer_401_json_when_signed_out(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_fetch_of_a_page_with_accept_json_gets_401_json(client: TestClient) -> None:
    response = client.get("/", headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert response.json() == {"code": "not_authenticated", "detail": "sign in first"}


def test_sign_in_with_the_right_password_opens_the_page(client: TestClient, user: str) -> None:
    response = sign_in(client, user)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    assert user in page.text
    assert 'name="csrf-token"' in page.text


def test_wrong_password_or_unknown_user_is_refused(client: TestClient, user: str) -> None:
    for name, password in [(user, "wrong-password"), ("nobody", PASSWORD)]:
        response = sign_in(client, name, password)
        assert response.status_code == 401
        assert "Wrong user name or password" in response.text
    assert client.get("/", follow_redirects=False).status_code == 303


def test_sign_in_without_the_csrf_token_is_refused(client: TestClient, user: str) -> None:
    client.get("/login")
    data = {"username": user, "password": PASSWORD, "csrf_token": "forged"}
    response = client.post("/login", data=data, follow_redirects=False)
    assert response.status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 303


def test_session_cookie_is_signed_httponly_and_samesite(client: TestClient, user: str) -> None:
    cookie = sign_in(client, user).headers["set-cookie"]
    assert "httponly" in cookie.lower()
    assert "samesite=lax" in cookie.lower()
    assert "secure" not in cookie.lower()
    assert PASSWORD not in cookie
    value = client.cookies["mlprod_session"]
    client.cookies.clear()
    client.cookies.set("mlprod_session", value[:-4] + ("AAAA" if value[-4:] != "AAAA" else "BBBB"))
    assert client.get("/", follow_redirects=False).status_code == 303


def test_cookie_is_secure_and_host_prefixed_over_https(settings: ClientSettings, user: str) -> None:
    settings = settings.model_copy(update={"client_cookie_secure": True})
    app = create_app(settings, api_transport=httpx.MockTransport(_unreachable_api))
    with TestClient(app, base_url="https://testserver") as client:
        cookie = sign_in(client, user).headers["set-cookie"]
        assert cookie.startswith("__Host-mlprod=")
        assert "secure" in cookie.lower()
        assert "strict-transport-security" in client.get("/login").headers


def test_repeated_failures_are_rate_limited_even_with_the_right_password(
    client: TestClient, user: str
) -> None:
    for _ in range(3):
        assert sign_in(client, user, "wrong-password").status_code == 401
    response = sign_in(client, user)
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    assert "Too many failed sign-ins" in response.text


def test_failures_are_also_limited_per_address(client: TestClient, user: str) -> None:
    for i in range(12):  # 4 x the per-user limit, spread over names
        assert sign_in(client, f"guess-{i}-{user}", "x").status_code == 401
    assert sign_in(client, user).status_code == 429


def test_sign_out_needs_the_token_and_ends_the_session(client: TestClient, user: str) -> None:
    sign_in(client, user)
    page = client.get("/").text
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    assert client.get("/").status_code == 200
    copied = client.cookies["mlprod_session"]
    response = client.post("/logout", data={"csrf_token": csrf_of(page)}, follow_redirects=False)
    assert response.status_code == 303
    assert "You have signed out" in client.get("/login").text
    assert client.get("/", follow_redirects=False).status_code == 303
    assert client.get("/app/tasks").status_code == 401
    client.cookies.clear()
    client.cookies.set("mlprod_session", copied)  # a cookie kept from before does not revive it
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_password_change_ends_existing_sessions(
    client: TestClient, user: str, settings: ClientSettings
) -> None:
    sign_in(client, user)
    app = client.app
    new_settings = settings.model_copy(
        update={"client_users": SecretStr(f"{user}:{CHEAP.hash('a-new-password')}")}
    )
    from ml_client.users import UserStore

    app.state.users = UserStore(new_settings)  # type: ignore[attr-defined]
    assert client.get("/", follow_redirects=False).status_code == 303


def test_responses_carry_security_headers(client: TestClient) -> None:
    headers = client.get("/login").headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cache-control"] == "no-store"


def test_static_files_are_served(client: TestClient) -> None:
    page = client.get("/login").text
    css = re.search(r'href="(/static/style\.css\?v=\w+)"', page)
    assert css
    assert client.get(css.group(1)).headers["content-type"].startswith("text/css")
    module = client.get("/static/js/main.js")
    assert module.status_code == 200
    assert module.headers["content-type"].startswith("text/javascript")
    assert module.headers["cache-control"] == "no-cache"  # its imports carry no version


def test_favicon_ico_is_the_pages_icon(client: TestClient) -> None:
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")


def test_an_empty_sign_in_form_gets_the_inline_error(client: TestClient) -> None:
    page = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    response = client.post("/login", data={"csrf_token": token.group(1)})
    assert response.status_code == 422
    assert "Enter your user name and your password." in response.text
    assert 'id="username"' in response.text  # the form again, not an error page


def test_unknown_page_gets_an_html_404(client: TestClient) -> None:
    response = client.get("/nowhere", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert "Not found" in response.text
