"""Sessions, CSRF tokens and the login rate limit of the web client."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from ml_client.errors import CsrfFailed, LoginRequired
from ml_client.users import UserStore
from ml_common.errors import BackendUnavailable, RateLimited

USER = "user"
USER_TAG = "user_tag"
SESSION_ID = "sid"
CSRF = "csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
IP_FACTOR = 4  # one address may fail this many times more often than one user name


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use."""
    token = request.session.get(CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[CSRF] = token
    return token


async def check_csrf(request: Request) -> None:
    """Refuse a state-changing request whose token (header or form field) is not the session's."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        field = (await request.form()).get(CSRF_FIELD)
        sent = field if isinstance(field, str) else None
    expected = request.session.get(CSRF)
    if not sent or not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
        raise CsrfFailed("the form was stale or came from another site; reload the page")


class SessionRegistry:
    """Server-side record of live sessions, so signing out ends a session for good.

    The cookie itself is only signed; without this, a copied cookie would work until it expired.
    """

    def __init__(self, redis: aioredis.Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    @staticmethod
    def _key(session_id: str) -> str:
        return f"mlprod:client:session:{hashlib.sha256(session_id.encode()).hexdigest()}"

    async def create(self, name: str) -> str:
        session_id = secrets.token_urlsafe(32)
        try:
            await self.redis.set(self._key(session_id), name, ex=self.ttl_s)
        except RedisError as exc:
            raise BackendUnavailable("sign-in is unavailable right now; try again shortly") from exc
        return session_id

    async def owner(self, session_id: str) -> str | None:
        try:
            raw = await self.redis.get(self._key(session_id))
        except RedisError as exc:
            raise BackendUnavailable("sessions are unavailable right now; try again") from exc
        return raw.decode() if isinstance(raw, bytes) else None

    async def revoke(self, session_id: str) -> None:
        try:
            await self.redis.delete(self._key(session_id))
        except RedisError as exc:
            raise BackendUnavailable("sessions are unavailable right now; try again") from exc


async def sign_in(request: Request, name: str, tag: str) -> None:
    """Start a fresh session (a new id and CSRF token: nothing survives from before)."""
    sessions: SessionRegistry = request.app.state.sessions
    request.session.clear()
    request.session[SESSION_ID] = await sessions.create(name)
    request.session[USER] = name
    request.session[USER_TAG] = tag
    csrf_token(request)


async def sign_out(request: Request) -> None:
    session_id = request.session.get(SESSION_ID)
    if isinstance(session_id, str):
        sessions: SessionRegistry = request.app.state.sessions
        await sessions.revoke(session_id)
    request.session.clear()


async def require_user(request: Request) -> str:
    """The signed-in user's name; raises LoginRequired otherwise.

    A session ends when it was signed out, or the user was removed or changed password.
    """
    name = request.session.get(USER)
    session_id = request.session.get(SESSION_ID)
    users: UserStore = request.app.state.users
    sessions: SessionRegistry = request.app.state.sessions
    if (
        not isinstance(name, str)
        or not isinstance(session_id, str)
        or users.fingerprint(name) != request.session.get(USER_TAG)
        or await sessions.owner(session_id) != name
    ):
        for key in (USER, SESSION_ID, USER_TAG):
            request.session.pop(key, None)
        raise LoginRequired("sign in first")
    return name


class LoginLimiter:
    """Failed sign-ins counted per user name and per address in Redis (shared by replicas)."""

    def __init__(self, redis: aioredis.Redis, max_failures: int, window_s: int) -> None:
        self.redis = redis
        self.max_failures = max_failures
        self.window_s = window_s

    @staticmethod
    def _keys(name: str, address: str) -> tuple[str, str]:
        user = hashlib.sha256(name.casefold().encode()).hexdigest()[:24]
        return f"mlprod:client:login:user:{user}", f"mlprod:client:login:ip:{address}"

    async def check(self, name: str, address: str) -> None:
        """Raise RateLimited while this user name or address has failed too often."""
        user_key, ip_key = self._keys(name, address)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(user_key)
                pipe.get(ip_key)
                pipe.ttl(user_key)
                pipe.ttl(ip_key)
                user_n, ip_n, user_ttl, ip_ttl = await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable("sign-in is unavailable right now; try again shortly") from exc
        blocked = []
        if int(user_n or 0) >= self.max_failures:
            blocked.append(int(user_ttl))
        if int(ip_n or 0) >= self.max_failures * IP_FACTOR:
            blocked.append(int(ip_ttl))
        if blocked:
            wait = max(max(blocked), 1)
            raise RateLimited(f"too many failed sign-ins; try again in {wait} seconds", wait)

    async def failed(self, name: str, address: str) -> None:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for key in self._keys(name, address):
                    pipe.incr(key)
                    pipe.expire(key, self.window_s, nx=True)
                await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable("sign-in is unavailable right now; try again shortly") from exc

    async def succeeded(self, name: str, address: str) -> None:
        try:
            await self.redis.delete(self._keys(name, address)[0])
        except RedisError as exc:
            raise BackendUnavailable("sign-in is unavailable right now; try again shortly") from exc
