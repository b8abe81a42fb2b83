"""A batch's counts, kept as its items start and end, and its `batch.completed` webhook.

Each item that ends (the worker's, one refused at intake or one cancelled before it started, by
the API) is added to the batch's set of final items and counted by state in the batch's hash;
a started one is in the set of started items until it ends. So a batch's progress is a hash and
a set size away (O(1)), however many items it has, and every change is PUBLISHed on the batch's
channel for its event streams. The API writes `expected` once every file is submitted (the
seal). A batch with a callback keeps `callback_url` in its hash, and `completed_at` (HSETNX)
makes exactly one caller the sender of its event. The Lua scripts below do each step atomically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone

from ml_common.records import (
    as_text,
    batch_events_channel,
    batch_final_key,
    batch_key,
    batch_started_key,
    now_iso,
)
from ml_common.schemas import FINAL_STATES, TaskState
from ml_common.webhooks import Delivery

EVENT_BATCH_COMPLETED = "batch.completed"
CALLBACK_URL = "callback_url"
EXPECTED = "expected"
COUNTED = "counted"  # in the hash of a batch whose counts are kept (batches since issue 24)
_FINAL = "final:"
FINISH_KEYS = 3

# KEYS: batch hash, final set, started set. ARGV: state, ttl, now, the total when sealing (else
# ""), "1" to skip items a worker has started (a cancel: they finish by themselves), the channel,
# then the task ids. Returns 1 to the one caller that completes a batch with a callback, else 0.
FINISH_SCRIPT = """
local counted = 0
for i = 7, #ARGV do
  if not (ARGV[5] == '1' and redis.call('SISMEMBER', KEYS[3], ARGV[i]) == 1) then
    if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
      redis.call('SREM', KEYS[3], ARGV[i])
      counted = counted + 1
    end
  end
end
if counted > 0 then
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'final:' .. ARGV[1], counted)
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'expected', ARGV[4]) end
if counted > 0 or ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[1]) end
if redis.call('HEXISTS', KEYS[1], 'callback_url') == 0 then return 0 end
local expected = redis.call('HGET', KEYS[1], 'expected')
if not expected or redis.call('SCARD', KEYS[2]) < tonumber(expected) then return 0 end
return redis.call('HSETNX', KEYS[1], 'completed_at', ARGV[3])
"""

# KEYS: final set, started set. ARGV: task id, ttl, channel. A redelivered or already final
# (cancelled) item is not started again.
START_SCRIPT = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], 'started')
return 1
"""


def finish_args(
    batch_id: str,
    task_ids: list[str],
    state: str,
    ttl_s: int,
    *,
    seal_total: int | None = None,
    unstarted_only: bool = False,
) -> list[str]:
    """The FINISH_KEYS keys and the arguments of FINISH_SCRIPT: items' end in `state`, and/or
    the seal (`seal_total`)."""
    keys = [batch_key(batch_id), batch_final_key(batch_id), batch_started_key(batch_id)]
    total = "" if seal_total is None else str(seal_total)
    channel = batch_events_channel(batch_id)
    flags = [state, str(ttl_s), now_iso(), total, "1" if unstarted_only else "", channel]
    return [*keys, *flags, *task_ids]


def start_args(batch_id: str, task_id: str, ttl_s: int) -> list[str]:
    """The 2 keys and the arguments of START_SCRIPT."""
    keys = [batch_final_key(batch_id), batch_started_key(batch_id)]
    return [*keys, task_id, str(ttl_s), batch_events_channel(batch_id)]


def batch_counts(raw: Mapping[str | bytes, str | bytes], started: int) -> dict[TaskState, int]:
    """Items per state from the batch's hash and its number of started items."""
    fields = {as_text(k): as_text(v) for k, v in raw.items()}
    counts = {s: int(fields.get(_FINAL + s.value, "0")) for s in FINAL_STATES}
    total = int(fields.get("total", "0"))
    counts[TaskState.started] = started
    counts[TaskState.queued] = max(total - sum(counts.values()), 0)
    return {state: counts.get(state, 0) for state in TaskState}


def completed_delivery(batch_id: str, raw: Mapping[str | bytes, str | bytes]) -> Delivery | None:
    """The `batch.completed` delivery of a completed batch's hash (None without a callback)."""
    fields = {as_text(k): as_text(v) for k, v in raw.items()}
    if not fields.get(CALLBACK_URL):
        return None
    counts = {s.value: int(fields.get(_FINAL + s.value, "0")) for s in FINAL_STATES}
    event = {
        "type": EVENT_BATCH_COMPLETED,
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "data": {"batch_id": batch_id, "total": int(fields.get(EXPECTED, "0")), "counts": counts},
    }
    body = json.dumps(event, separators=(",", ":"))
    return Delivery.new(fields[CALLBACK_URL], EVENT_BATCH_COMPLETED, body, fields.get("owner", ""))
