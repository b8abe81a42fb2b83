"""The worker's result backend: Celery's Redis backend, storing each state in one round trip.

Celery's own reads the stored meta back before each write (so that a task redelivered after
it succeeded does not overwrite its result), then writes and publishes it in a transaction:
two round trips and a JSON decode per state. Here one script does the check, the write and
the PUBLISH (`ml_common.taskstore.STORE_STATE_LUA`). What is stored is unchanged: the same
meta, the same expiry, the same channel, so the API reads it as before.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend
from kombu.utils.encoding import bytes_to_str

from ml_common.taskstore import STORE_STATE_LUA


def backend_url(result_backend: str) -> str:
    """The `result_backend` setting that makes a Celery app use `LeanRedisBackend`."""
    return f"{__name__}:{LeanRedisBackend.__name__}+{result_backend}"


def state_meta(backend: Any, task_id: str, result: Any, state: str,
               request: Any = None, traceback: str | None = None) -> str:  # fmt: skip
    """The meta Celery's `backend` stores for `state`, encoded as it encodes it."""
    meta = backend._get_result_meta(
        result=result, state=state, traceback=traceback, request=request
    )
    meta["task_id"] = bytes_to_str(task_id)
    return str(bytes_to_str(backend.encode(meta)))


class LeanRedisBackend(RedisBackend):
    """Celery's Redis backend with `_store_result` in one round trip."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._store_state: Any = None  # registered on first use: the client is made lazily

    def _store_result(
        self, task_id: str, result: Any, state: str, traceback: str | None = None,
        request: Any = None, **kwargs: Any,
    ) -> Any:  # fmt: skip
        celery: Any = self  # the stubs lack the backend's own helpers
        value = state_meta(self, task_id, result, state, request, traceback)
        celery._set_with_state(self.get_key_for_task(task_id), value, state)  # FAILURE's expiry
        return result

    def _set(self, key: str, value: str, expires: int | None = None) -> None:
        # called through `set`, which retries on a lost connection (result_backend_always_retry)
        if self._store_state is None:
            self._store_state = self.client.register_script(STORE_STATE_LUA)
        ttl = expires if expires is not None else getattr(self, "expires", None)
        self._store_state(keys=[key], args=[value, int(ttl or 0)])
