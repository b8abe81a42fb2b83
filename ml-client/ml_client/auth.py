"""Sessions, CSRF tokens and the login rate limit of the web client."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

from fastapi import Request
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter
from redis import asyncio as aioredis

from ml_client.errors import CsrfFailed, LoginRequired
from ml_client.users import UserStore
from ml_common.errors import RateLimited, backend_errors
from ml_common.ratelimits import redis_storage, retry_after
from ml_common.records import LOGIN_PREFIX, session_key

USER = "user"
USER_TAG = "user_tag"
SESSION_ID = "sid"
CSRF = "csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
IP_FACTOR = 4  # one address may try this many times more often than one user name
USER_FACTOR = 4  # one user name may be tried this many times more often than by one address


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

    async def create(self, name: str) -> str:
        session_id = secrets.token_urlsafe(32)
        with backend_errors("sign-in is unavailable right now; try again shortly"):
            await self.redis.set(session_key(session_id), name, ex=self.ttl_s)
        return session_id

    async def owner(self, session_id: str) -> str | None:
        with backend_errors("sessions are unavailable right now; try again"):
            raw = await self.redis.get(session_key(session_id))
        return raw.decode() if isinstance(raw, bytes) else None

    async def revoke(self, session_id: str) -> None:
        with backend_errors("sessions are unavailable right now; try again"):
            await self.redis.delete(session_key(session_id))


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
    """Sign-in attempts, counted atomically in Redis before the password is checked.

    Three moving windows of `window_s` (the `limits` library; shared by replicas):
    - one address may try one user name `max_attempts` times;
    - one address may try `IP_FACTOR` times that over all user names (password spraying);
    - one user name may be tried `USER_FACTOR` times that over all addresses (a botnet), except
      that an address which has not tried that name in the window still gets one try, so no
      one can lock the owner out: from a clean address, the right password always works.
    A success clears its address's count for that name, never the others.
    """

    def __init__(self, redis: aioredis.Redis, max_attempts: int, window_s: int) -> None:
        self.limiter = MovingWindowRateLimiter(redis_storage(redis, LOGIN_PREFIX))
        self.pair = RateLimitItemPerSecond(max_attempts, window_s, namespace="pair")
        self.first = RateLimitItemPerSecond(1, window_s, namespace="first")
        self.address = RateLimitItemPerSecond(max_attempts * IP_FACTOR, window_s, namespace="ip")
        self.user = RateLimitItemPerSecond(max_attempts * USER_FACTOR, window_s, namespace="user")

    @staticmethod
    def _user_id(name: str) -> str:
        return hashlib.sha256(name.casefold().encode()).hexdigest()[:24]

    @staticmethod
    def _network(address: str) -> str:
        """The address, or for IPv6 its /64: one host commonly holds a whole /64 to rotate in."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address
        return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)

    async def attempt(self, name: str, address: str) -> None:
        """Count one sign-in attempt; raise RateLimited when it may not check a password."""
        user, address = self._user_id(name), self._network(address)
        with backend_errors("sign-in is unavailable right now; try again shortly"):
            first = await self.limiter.hit(self.first, user, address)
            for item, ids in ((self.pair, (user, address)), (self.address, (address,))):
                if not await self.limiter.hit(item, *ids):
                    await self._refuse(item, ids)
            if not await self.limiter.hit(self.user, user) and not first:
                await self._refuse(self.user, (user,))

    async def _refuse(self, item: RateLimitItem, ids: tuple[str, ...]) -> None:
        stats = await self.limiter.get_window_stats(item, *ids)
        wait = retry_after(stats.reset_time)
        raise RateLimited(f"too many failed sign-ins; try again in {wait} seconds", wait)

    async def succeeded(self, name: str, address: str) -> None:
        user, address = self._user_id(name), self._network(address)
        with backend_errors("sign-in is unavailable right now; try again shortly"):
            await self.limiter.clear(self.pair, user, address)
            await self.limiter.clear(self.first, user, address)
