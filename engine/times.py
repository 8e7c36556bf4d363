"""Times in the contract's shape (`2026-11-28T06:02:14.282Z`), shared by every wire that
shows them: the REST and feed responses (gateway) and the webhook payloads (webhooks)."""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["iso"]


_SECOND_CACHED: list[tuple[int, str]] = [(-1, "")]


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as `2026-11-28T06:02:14.282Z`. Every response carries a few of
    these, mostly within the same second, so the part up to the second is reused."""
    if ms is None:
        return None
    second, millis = divmod(ms, 1000)
    cached_second, prefix = _SECOND_CACHED[0]
    if second != cached_second:
        d = datetime.fromtimestamp(second, tz=timezone.utc)
        prefix = f"{d.year:04d}-{d.strftime('%m-%dT%H:%M:%S')}"
        _SECOND_CACHED[0] = (second, prefix)
    return f"{prefix}.{millis:03d}Z"
