from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from ml_api.errors import install_error_handlers
from ml_client.errors import CsrfFailed, LoginRequired, UpstreamError
from ml_common import errors
from ml_common.errors import BackendUnavailable, backend_errors

STATUS = {
    errors.NotAuthenticated: 401,
    errors.TaskNotFound: 404,
    errors.TaskNotFinished: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMedia: 415,
    errors.InvalidImage: 422,
    errors.ImageTooLarge: 422,
    errors.RateLimited: 429,
    errors.QueueUnavailable: 503,
    errors.BackendUnavailable: 503,
    errors.DetectorUnavailable: 503,
    LoginRequired: 401,
    CsrfFailed: 403,
}


@pytest.mark.parametrize(("cls", "status"), STATUS.items(), ids=lambda v: getattr(v, "code", v))
def test_each_error_carries_its_status(cls: type[errors.MLProdError], status: int) -> None:
    assert cls.status == status


def test_every_domain_error_says_what_the_client_did_or_what_is_down() -> None:
    subclasses = [c for c in errors.MLProdError.__subclasses__() if c.__module__ == errors.__name__]
    assert all(cls.status != 500 for cls in subclasses), "a domain error without its own status"
    assert errors.MLProdError("x").status == 500


def test_an_upstream_error_sends_the_status_it_was_given() -> None:
    assert UpstreamError(502, "upstream", "the API refused").status == 502


def test_the_api_answers_with_the_status_of_the_error() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/busy")
    def busy() -> None:
        raise errors.QueueUnavailable("the queue is down")

    @app.get("/gone")
    def gone() -> None:
        raise errors.TaskNotFound("no task x")

    with TestClient(app) as client:
        busy_answer, gone_answer = client.get("/busy"), client.get("/gone")
    assert (busy_answer.status_code, busy_answer.headers["retry-after"]) == (503, "5")
    assert busy_answer.json() == {"code": "queue_unavailable", "detail": "the queue is down"}
    assert gone_answer.status_code == 404 and "retry-after" not in gone_answer.headers


def test_backend_errors_turn_a_redis_failure_into_backend_unavailable() -> None:
    failure = RedisConnectionError("Error 111 connecting to localhost:6379")
    with pytest.raises(BackendUnavailable) as caught, backend_errors("sign-in is down"):
        raise failure
    assert caught.value.detail == "sign-in is down"
    assert caught.value.__cause__ is failure
    with pytest.raises(BackendUnavailable, match="result store is unreachable"), backend_errors():
        raise failure


def test_backend_errors_cover_the_asyncio_client_and_let_other_errors_through() -> None:
    async def ping_nothing() -> None:
        client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
        try:
            with backend_errors():
                await client.ping()
        finally:
            await client.aclose()

    with pytest.raises(BackendUnavailable):
        asyncio.run(ping_nothing())
    with pytest.raises(ValueError, match="not ours"), backend_errors():
        raise ValueError("not ours")
