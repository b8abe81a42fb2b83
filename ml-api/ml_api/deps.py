"""Everything a route needs from outside reaches it through these dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis import asyncio as aioredis

from ml_api.batches import BatchStore, IdempotencyStore
from ml_api.queue import TaskQueue
from ml_api.ratelimit import RateLimiter
from ml_api.results import ResultReader
from ml_api.submit import Submitter
from ml_api.subscriber import Subscriber, WaitSlots
from ml_common.apikeys import ON_BEHALF_HEADER, ApiKey, ApiKeyStore
from ml_common.errors import NotAuthenticated
from ml_common.settings import Settings
from ml_common.storage import Storage
from ml_common.taskstore import TaskStore

_bearer = HTTPBearer(auto_error=False, description="an API key from `mlprod api-key create`")


# The dependencies that only read app.state are coroutines: FastAPI runs a plain function in
# the thread pool, and those hops were most of an upload's CPU (docs/performance.md).


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


async def get_queue(request: Request) -> TaskQueue:
    queue: TaskQueue = request.app.state.queue
    return queue


async def get_redis(request: Request) -> aioredis.Redis:
    redis: aioredis.Redis = request.app.state.redis
    return redis


def _tasks(request: Request) -> TaskStore:
    settings: Settings = request.app.state.settings
    return TaskStore(request.app.state.redis, settings.result_expires_s)


async def get_tasks(request: Request) -> TaskStore:
    return _tasks(request)


async def get_subscriber(request: Request) -> Subscriber:
    subscriber: Subscriber = request.app.state.subscriber
    return subscriber


async def get_wait_slots(request: Request) -> WaitSlots:
    slots: WaitSlots = request.app.state.wait_slots
    return slots


async def get_results(request: Request) -> ResultReader:
    slots: WaitSlots = request.app.state.wait_slots
    return ResultReader(_tasks(request), request.app.state.subscriber, slots)


async def get_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.limiter
    return limiter


def get_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    on_behalf_of: Annotated[
        str | None, Header(alias=ON_BEHALF_HEADER, include_in_schema=False)
    ] = None,
) -> ApiKey:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticated("send an API key as 'Authorization: Bearer <key>'")
    keys: ApiKeyStore = request.app.state.api_keys
    key = keys.check(credentials.credentials)
    if key is None:
        raise NotAuthenticated("the API key is not valid (unknown or revoked)")
    return key if on_behalf_of is None else key.on_behalf_of(on_behalf_of)


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StorageDep = Annotated[Storage, Depends(get_storage)]
QueueDep = Annotated[TaskQueue, Depends(get_queue)]
TasksDep = Annotated[TaskStore, Depends(get_tasks)]
ResultsDep = Annotated[ResultReader, Depends(get_results)]
ApiKeyDep = Annotated[ApiKey, Depends(get_api_key)]
LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
SubscriberDep = Annotated[Subscriber, Depends(get_subscriber)]
WaitSlotsDep = Annotated[WaitSlots, Depends(get_wait_slots)]


async def get_submitter(
    request: Request, settings: SettingsDep, storage: StorageDep, queue: QueueDep, tasks: TasksDep
) -> Submitter:
    return Submitter(settings, storage, queue, tasks, request.app.state.decode_gate)


async def get_idempotency(redis: RedisDep, settings: SettingsDep) -> IdempotencyStore:
    return IdempotencyStore(redis, settings.idempotency_ttl_s)


def get_batches(redis: RedisDep, settings: SettingsDep) -> BatchStore:
    return BatchStore(redis, settings.result_expires_s)


@dataclass(frozen=True)
class Uploading:
    """What an upload route needs, resolved as one dependency: FastAPI's resolution of each
    cost a fifth of an upload's CPU under cProfile."""

    settings: Settings
    submitter: Submitter
    claims: IdempotencyStore
    limiter: RateLimiter
    results: ResultReader


async def get_uploading(request: Request, queue: QueueDep) -> Uploading:
    """The rest read from app.state directly; the queue stays a dependency tests swap."""
    state = request.app.state
    settings: Settings = state.settings
    tasks = _tasks(request)
    return Uploading(
        settings,
        Submitter(settings, state.storage, queue, tasks, state.decode_gate),
        IdempotencyStore(state.redis, settings.idempotency_ttl_s),
        state.limiter,
        ResultReader(tasks, state.subscriber, state.wait_slots),
    )


SubmitterDep = Annotated[Submitter, Depends(get_submitter)]
UploadingDep = Annotated[Uploading, Depends(get_uploading)]
IdempotencyDep = Annotated[IdempotencyStore, Depends(get_idempotency)]
BatchesDep = Annotated[BatchStore, Depends(get_batches)]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="retries with the same key and body return the first answer's id",
    ),
]
