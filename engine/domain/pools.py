"""A pool's own settings (a pool: one customer's credits of one currency, per resource).

- `hard_limit`: True (the default) refuses a consumption the balance cannot cover; False
  is a soft limit: consumptions are never refused for want of credits and the balance may
  go below zero — an overdraft, repaid by the next grants (docs/engine.md).
- `low_balance_units`: the balance at or below which the pool counts as low (the
  `credits.balance.usage_low` event, the widgets' warning); without it, the pool is low
  once `usage_low_percent` (80 by default) of its active grants is used.

The engine keeps and applies them (engine/core/machine.py `_configure_pool`); this is the
one function every wire format calls to change them.
"""

from __future__ import annotations

import msgspec

from engine.core.commands import ConfigurePool, PoolSettingsReply, Refused
from engine.domain.context import Domain, engine_id, require_currency, require_customer
from engine.domain.errors import from_refusal

__all__ = ["PoolConfig", "configure"]


class PoolConfig(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    currency_id: str
    resource_id: str | None = None
    hard_limit: bool | None = None  # None: unchanged
    low_balance_units: int | None = None  # None: unchanged (see clear_low_balance)
    clear_low_balance: bool = False  # back to the percentage rule
    usage_low_percent: int | None = None  # None: unchanged


async def configure(d: Domain, env: str, c: PoolConfig) -> PoolSettingsReply:
    """Change a pool's settings (creating the pool if the customer has none of this
    currency yet); the answer has every setting and the balance after."""
    await require_customer(d, env, c.customer_id)
    await require_currency(d, env, c.currency_id)
    reply = await d.runtime.submit(engine_id(env, c.customer_id), ConfigurePool(
        currency_id=c.currency_id, resource_id=c.resource_id, hard_limit=c.hard_limit,
        low_balance_units=c.low_balance_units, clear_low_balance=c.clear_low_balance,
        usage_low_percent=c.usage_low_percent))
    if isinstance(reply, Refused):
        raise from_refusal(reply)
    assert isinstance(reply, PoolSettingsReply)
    return reply
