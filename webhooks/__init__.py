"""Signed webhook delivery of `credits.*` events (docs/webhooks.md).

| module | holds |
|---|---|
| `service.py` | `Webhooks`: relay + dispatcher + purge as one service; the endpoint API's operations |
| `relay.py` | tailing the outbox; one delivery per (event, endpoint), cursor moved atomically |
| `dispatcher.py` | scanning due lane heads, bounded workers, recording attempts, retries, 410 |
| `tables.py` | SQL of the webhook tables and the lane invariant |
| `endpoints.py` | `Endpoint` and the in-memory registry |
| `events.py` | domain events as payloads `{id, type, timestamp, data}` |
| `signing.py` | Standard Webhooks secrets and signatures |
| `schedule.py` | `RetryPolicy`: exponential backoff with jitter, then dead-letter |
| `sender.py` | `Sender`s: the pooled HTTP/1.1 sender, the httpx one (tests, fallback) |
| `addresses.py` | which addresses webhooks may go to (no private ones unless allowed) |
| `shared.py` | `Options` (every limit) and the state the parts share |
"""

from webhooks.events import EVENT_TYPES
from webhooks.schedule import RetryPolicy
from webhooks.sender import Answer, HttpxSender, PooledSender, Sender
from webhooks.service import Refusal, ReplayResult, Statistics, Webhooks
from webhooks.shared import Options

__all__ = ["Webhooks", "Options", "RetryPolicy", "Refusal", "ReplayResult", "Statistics",
           "Sender", "PooledSender", "HttpxSender", "Answer", "EVENT_TYPES"]
