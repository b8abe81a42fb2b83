"""The `batch.completed` webhook: which batch items are final, and the one event when all are.

A batch with a callback keeps `callback_url` in its hash; each item that ends (the worker's, or
one refused at intake by the API) is added to the batch's set of final items and counted by
state; the API writes `expected` once every file is submitted. The one Lua script below does
all of it atomically, and `completed_at` (HSETNX) makes exactly one caller the sender.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone

from ml_common.records import as_text, batch_final_key, batch_key, now_iso
from ml_common.schemas import FINAL_STATES
from ml_common.webhooks import Delivery

EVENT_BATCH_COMPLETED = "batch.completed"
CALLBACK_URL = "callback_url"
_FINAL = "final:"

# KEYS: batch hash, final set. ARGV: task id ("" to seal), state (or the total when sealing),
# ttl, now. Returns 1 to the one caller that completes the batch, else 0.
FINISH_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], 'callback_url') == 0 then return 0 end
if ARGV[1] ~= '' then
  if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'final:' .. ARGV[2], 1)
else
  redis.call('HSET', KEYS[1], 'expected', ARGV[2])
end
local expected = redis.call('HGET', KEYS[1], 'expected')
if not expected or redis.call('SCARD', KEYS[2]) < tonumber(expected) then return 0 end
return redis.call('HSETNX', KEYS[1], 'completed_at', ARGV[4])
"""


def finish_args(batch_id: str, task_id: str, state: str, ttl_s: int) -> list[str]:
    """The keys and arguments of FINISH_SCRIPT (2 keys): an item's end, or the seal (task_id
    "", state the total)."""
    keys = [batch_key(batch_id), batch_final_key(batch_id)]
    return [*keys, task_id, state, str(ttl_s), now_iso()]


def completed_delivery(batch_id: str, raw: Mapping[str | bytes, str | bytes]) -> Delivery | None:
    """The `batch.completed` delivery of a completed batch's hash (None without a callback)."""
    fields = {as_text(k): as_text(v) for k, v in raw.items()}
    if not fields.get(CALLBACK_URL):
        return None
    counts = {s.value: int(fields.get(_FINAL + s.value, "0")) for s in FINAL_STATES}
    event = {
        "type": EVENT_BATCH_COMPLETED,
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "data": {"batch_id": batch_id, "total": int(fields.get("expected", "0")), "counts": counts},
    }
    body = json.dumps(event, separators=(",", ":"))
    return Delivery.new(fields[CALLBACK_URL], EVENT_BATCH_COMPLETED, body, fields.get("owner", ""))
