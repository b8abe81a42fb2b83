"""The Redis users of deploy/redis/start.sh, on a real redis-server: the API, a worker and the web
client each work end to end with their own user, and none can reach another's keys."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from argon2 import PasswordHasher

from ml_common.apikeys import ApiKeyStore
from ml_common.settings import Settings
from ml_tools.devstack import Stack, free_port, wait_http, wait_tcp
from tests.conftest import (
    MODEL_DIR,
    ROOT,
    TEST_AMQP,
    _delete_queue,
    _settings_kwargs,
    need,
    need_rabbitmq,
    storage_env,
    storage_independent,
)

pytestmark = [pytest.mark.integration, storage_independent("Redis ACLs")]

START = ROOT / "deploy" / "redis" / "start.sh"
USERS = {
    "admin": "REDIS_PASSWORD",
    "mlprod-api": "REDIS_API_PASSWORD",
    "mlprod-worker": "REDIS_WORKER_PASSWORD",
    "mlprod-client": "REDIS_CLIENT_PASSWORD",
}


@dataclass
class AclRedis:
    port: int
    passwords: dict[str, str]

    def url(self, user: str) -> str:
        return f"redis://{user}:{self.passwords[user]}@127.0.0.1:{self.port}/0"

    def client(self, user: str | None = None) -> redis.Redis:
        return redis.Redis.from_url(self.url(user) if user else f"redis://127.0.0.1:{self.port}/0")


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[AclRedis]:
    """redis-server started by deploy/redis/start.sh, with a local config instead of the image's."""
    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    port = free_port()
    conf = tmp_path / "redis.conf"
    conf.write_text(f'port {port}\nbind 127.0.0.1\ndir {tmp_path}\nsave ""\nappendonly no\n')
    passwords = {user: secrets.token_hex(16) for user in USERS}
    env = {**os.environ, "REDIS_CONF": str(conf), "REDIS_ACLFILE": str(tmp_path / "users.acl")}
    env.update({var: passwords[user] for user, var in USERS.items()})
    with (tmp_path / "redis.log").open("wb") as log:
        proc = subprocess.Popen(["sh", str(START)], env=env, stdout=log, stderr=log)
    try:
        wait_tcp(port, 10, proc)
        yield AclRedis(port, passwords)
    finally:
        proc.terminate()
        proc.wait(10)


def test_no_password_reaches_the_command_line(acl_redis: AclRedis) -> None:
    """Redis started with its users: no password in any process's arguments"""
    args = Path("/proc").glob("[0-9]*/cmdline")
    command_lines = [p.read_bytes() for p in args if p.exists()]
    for password in acl_redis.passwords.values():
        assert not any(password.encode() in line for line in command_lines)


def test_each_user_reaches_only_its_own_keys(acl_redis: AclRedis) -> None:
    """Each Redis user is refused the keys and commands of the others"""
    task, session = f"mlprod:task:{uuid.uuid4()}", "mlprod:client:session:x"
    acl_redis.client("admin").set(task, "1")
    acl_redis.client("admin").set(session, "1")
    allowed = {"mlprod-api": task, "mlprod-worker": task, "mlprod-client": session}
    for user, key in allowed.items():
        conn = acl_redis.client(user)
        assert conn.get(key) == b"1"
        with pytest.raises(redis.exceptions.NoPermissionError):
            conn.get(session if key == task else task)
        with pytest.raises(redis.exceptions.NoPermissionError):
            conn.flushall()
    health = redis.Redis(port=acl_redis.port, username="healthcheck", password="none")
    assert health.ping()  # the healthcheck's PING needs no password...
    with pytest.raises(redis.exceptions.NoPermissionError):
        health.get(task)  # ...and gets nothing else
    with pytest.raises(redis.exceptions.AuthenticationError):
        acl_redis.client().ping()  # a client that does not sign in gets nothing at all


def test_api_worker_and_web_client_work_with_their_own_users(
    acl_redis: AclRedis, tmp_path: Path, astronaut_jpeg: bytes
) -> None:
    """A detection and a sign-in, each process on its own Redis user"""
    need(MODEL_DIR.is_dir(), f"no converted model at {MODEL_DIR}: run `make model`")
    need_rabbitmq()
    password = "a-fine-password"
    env = {
        "ML_ENVIRONMENT": "development",
        **storage_env(tmp_path / "storage"),
        "ML_MODEL_DIR": str(MODEL_DIR),
        "ML_QUEUE_NAME": f"detections-acl-{uuid.uuid4().hex[:8]}",
        "ML_BROKER_URL": TEST_AMQP,
        "ML_RESULT_BACKEND": acl_redis.url("mlprod-worker"),
    }
    stack = Stack(env, tmp_path / "logs")
    settings = Settings(_env_file=None, **_settings_kwargs(env))  # type: ignore[arg-type]
    key, _ = ApiKeyStore.from_settings(settings).create("acl")
    try:
        stack.start_worker()
        stack.env["ML_RESULT_BACKEND"] = acl_redis.url("mlprod-api")  # read at each start
        stack.start_api()
        stack.wait_ready()
        auth = {"Authorization": f"Bearer {key}"}
        r = httpx.post(f"{stack.api_url}/api/v1/detections", headers=auth, timeout=30,
                       files={"file": ("a.jpg", astronaut_jpeg, "image/jpeg")})  # fmt: skip
        assert r.status_code == 202, r.text
        status = httpx.get(f"{stack.api_url}{r.json()['links']['self']}", params={"wait": 60},
                           headers=auth, timeout=70).json()  # fmt: skip
        assert status["status"] == "succeeded", status
        users = f"alice:{PasswordHasher(time_cost=1, memory_cost=1024).hash(password)}"
        stack.start_client(key, {"ML_RESULT_BACKEND": acl_redis.url("mlprod-client"),
                                 "ML_CLIENT_USERS": users})  # fmt: skip
        wait_http(f"{stack.client_url}/healthz", 60, stack.procs["client"])
        with httpx.Client(base_url=stack.client_url, timeout=30) as browser:
            token = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/login").text)
            assert token
            data = {"username": "alice", "password": password, "csrf_token": token[1]}
            assert browser.post("/login", data=data).status_code == 303
            assert browser.get("/").status_code == 200
    finally:
        stack.stop()
        _delete_queue(settings)  # the worker's queues on the system RabbitMQ
