"""The cache of customers' effective entitlements (engine/domain/entitlements.py computes
them; each `Domain` holds one), apart so that what changes them (subscriptions,
promotions) can invalidate it without importing what reads subscriptions."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["EntitlementsCache"]


# Effective entitlements are read on every usage report, event batch and entitlement
# check, and change only when a subscription or promotion is written or a boundary in time
# passes: they are cached per (environment, customer, resource) until the earliest such
# boundary, least recently used out past as many customers as the catalog caches
# documents per table (CREDITD_CACHE_ENTRIES_MAX).
class EntitlementsCache:
    def __init__(self) -> None:
        # (env, customer) -> {resource: (sources, valid from, valid until)}
        self.entries: OrderedDict[tuple[str, str], dict[str | None, tuple[Any, int, int]]]
        self.entries = OrderedDict()
        # Bumped by every invalidation: a result computed while one happened may predate
        # the change, so it is answered but not kept.
        self.epoch = 0

    def invalidate(self, env: str, customer_id: str) -> None:
        """Forget the customer's cached entitlements (a subscription or promotion changed)."""
        self.entries.pop((env, customer_id), None)
        self.epoch += 1
