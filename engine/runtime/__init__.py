"""The actor runtime: one serialized mailbox per customer, served by a few worker tasks.

Runs on anyio, so on asyncio and trio alike; everything it applies goes through the pure
`engine.core.machine.apply`.
"""

from engine.runtime.clock import Clock, ManualClock, SystemClock
from engine.runtime.errors import (
    EngineClosed,
    EngineError,
    EngineFault,
    Overloaded,
    StoreUnavailable,
)
from engine.runtime.runtime import MailboxStatistics, Runtime, RuntimeStatistics
from engine.runtime.store import Store

__all__ = [
    "Clock",
    "ManualClock",
    "SystemClock",
    "EngineError",
    "EngineClosed",
    "EngineFault",
    "Overloaded",
    "StoreUnavailable",
    "Runtime",
    "MailboxStatistics",
    "RuntimeStatistics",
    "Store",
]
