"""Why a command could not be handled at all (as opposed to a business refusal).

    EngineError
     ├── Overloaded        mailbox or resident limit reached, or the deadline passed
     │                     before the command was applied: nothing applied; retry later
     │                     (the gateway maps it to 429 + Retry-After)
     ├── StoreUnavailable  the store failed to make the batch durable: nothing applied,
     │                     in-memory state rolled back; retry later (503 + Retry-After)
     ├── EngineClosed      the runtime is shutting down
     ├── KeysRemembered    (between store and runtime, never a caller's) keys a batch
     │                     applied as new are remembered: nothing was written; the
     │                     runtime applies the batch again, those keys known
     └── EngineFault       an unexpected error (a bug) failed the batch; its outcome is
                           unknown, the customer's state was dropped and reloads from the
                           store (the gateway answers 500; a retry with the key is safe)
"""

from __future__ import annotations

from engine.core.effects import IdempotencyRecord

__all__ = ["EngineError", "Overloaded", "StoreUnavailable", "ShardMoved", "EngineClosed",
           "EngineFault", "KeysRemembered"]


class EngineError(Exception):
    retry_after_s: float = 1.0

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


class Overloaded(EngineError):
    pass


class StoreUnavailable(EngineError):
    pass


class ShardMoved(StoreUnavailable):
    """This process does not own the customer now (a cluster: its shard's lease is held
    elsewhere, was lost, or is moving): nothing was applied. The cluster's router sends
    the command to the owner instead; a client that sees it gets 503 with Retry-After."""

    retry_after_s = 0.2


class EngineClosed(EngineError):
    pass


class EngineFault(EngineError):
    pass


class KeysRemembered(EngineError):
    """Raised by `Store.commit` when it remembers keys the batch applied as new
    (`new_keys`); `records` are the remembered requests and replies. Nothing of the batch
    was written."""

    def __init__(self, records: list[IdempotencyRecord]) -> None:
        super().__init__(f"{len(records)} key(s) of this batch are remembered")
        self.records = records
