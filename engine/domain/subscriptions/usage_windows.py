"""What a subscription's change or end does to the usage it counted.

Usage counters count the window they were last written in, and reads treat a counter of an
earlier window as 0 (`engine.core.usage`). That holds while the feature resets. When a
change of plan (or the subscription's end) leaves the feature with terms that do not
reset, there is no window left to compare with, and a counter of a window that had
already reset would be read as it stands: usage that had gone back to 0 would come back.

So at the moment a subscription's terms stop applying (`at`), each feature whose
entitlement in those terms resets has its counter brought to the window current at `at`
(`RollUsage`): a counter of an earlier window restarts from 0, one of the current window
keeps its value (usage carries over the change, as it does between plans that reset).
Nothing that was visible changes: a counter restarted here already read 0.
"""

from __future__ import annotations

from engine.billing.periods import reset_window
from engine.core.commands import RollUsage
from engine.domain.context import Domain, engine_id
from engine.domain.packages import published
from engine.domain.subscriptions.document import Subscription

__all__ = ["roll_usage_windows", "usage_windows"]


async def usage_windows(d: Domain, env: str, sub: Subscription, at: int
                        ) -> dict[str, tuple[int, int]]:
    """feature id -> the usage window [start, end) at `at` of each feature whose
    entitlement in `sub`'s plan or add-ons resets (the plan's terms first, then the first
    add-on's that has one, as the effective entitlements take them), anchored where the
    subscription's usage windows are."""
    anchor = sub.usage_anchor or sub.start
    packages = [await published(d.documents, env, "plan", sub.plan_id, sub.plan_version)]
    packages += [await published(d.documents, env, "addon", a.id, a.version)
                 for a in sub.addons]
    windows: dict[str, tuple[int, int]] = {}
    for package in packages:
        for ent in package.entitlements if package is not None else ():
            if ent.type != "FEATURE" or not ent.is_granted or not ent.reset_period:
                continue
            if ent.id in windows:
                continue
            according_to = (ent.reset_period_configuration or {}).get("accordingTo")
            try:
                windows[ent.id] = reset_window(ent.reset_period, according_to, anchor, at)
            except ValueError:
                continue  # an anchor the period does not take: no window, as in reads
    return windows


async def roll_usage_windows(d: Domain, env: str, sub: Subscription, at: int) -> None:
    """Bring the counters of `sub`'s resetting features to their windows at `at`, before
    its terms change or end there (the module docstring)."""
    windows = await usage_windows(d, env, sub, at)
    if windows:
        await d.runtime.submit(engine_id(env, sub.customer_id), RollUsage(windows=tuple(
            (feature_id, sub.resource_id, start) for feature_id, (start, _) in windows.items())))
