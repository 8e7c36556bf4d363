"""Server settings, from the command line and the environment (the command line wins).

| setting | environment | default |
|---|---|---|
| host | CREDITD_HOST | 127.0.0.1 |
| port | CREDITD_PORT | 8000 |
| database URL | CREDITD_DATABASE_URL | sqlite:///$CREDITD_DATA_DIR/creditd.db (data/) |
| API keys | CREDITD_API_KEYS | none: one is generated on first start and printed once |
| durability | CREDITD_DURABILITY | sync |
| webhooks | CREDITD_WEBHOOKS_* | see docs/webhooks.md |
| live feed | CREDITD_FEED_*, CREDITD_TOKEN_SECRET | see docs/feed.md |
| auto-recharge | CREDITD_RECHARGE_PROVIDER, CREDITD_RECHARGE_TIMEOUT_S | see docs/auto-recharge.md |
| estimate tax rates | CREDITD_TAX_RATES | none ("DE=19,GB=20": percent per billing country) |
| memory, queues | CREDITD_MEMORY_MB, CREDITD_RESIDENT_MAX, … (`LIMITS`) | docs/operations.md |
| portal, widgets | CREDITD_TOKEN_READS_*, CREDITD_PORTAL_FRAME_ANCESTORS | docs/portal.md |
| metrics | CREDITD_METRICS, CREDITD_METRICS_TOKEN | on; none (docs/metrics.md) |

A bad value is refused at start-up with a message naming the variable, never a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from engine.billing.pricing import parse_tax_rates

__all__ = ["ConfigError", "LIMITS", "Settings"]


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


def _flag(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("1", "true", "yes", "on")


def _keys(raw: str | None) -> list[str]:
    keys = [k.strip() for k in (raw or "").split(",") if k.strip()]
    for entry in keys:
        env, _, key = entry.rpartition(":")
        if not key or "/" in env:
            raise ConfigError(f"CREDITD_API_KEYS: {entry!r} is not 'key' or 'environment:key' "
                              "(environment names cannot contain '/')")
    return keys


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"CREDITD_PORT: {raw!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"CREDITD_PORT: {port} is not between 0 and 65535")
    return port


def _number(values: dict[str, object], group: str, name: str, kind: type) -> None:
    """`CREDITD_<GROUP>_<NAME>` (or `CREDITD_<NAME>` with no group) into
    values["<group>_<name>"] (or values["<name>"]) when set, as `kind`."""
    field = f"{group}_{name}" if group else name
    variable = f"CREDITD_{field.upper()}"
    raw = os.environ.get(variable)
    if raw:
        try:
            values[field] = kind(raw)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise ConfigError(f"{variable}: {raw!r} is not {what}") from None


# Every in-memory limit of the engine, the store and the gateway, read from
# CREDITD_<NAME> (docs/operations.md, "Limits and overload", says what happens at each).
# All must be positive.
LIMITS: dict[str, type] = {
    "memory_mb": int,  # the runtime's budget: resident customers and remembered keys
    "resident_max": int, "mailbox_max": int, "pending_max": int, "batch_max": int,
    "workers": int, "passivate_after_s": float,
    "flush_rows_max": int, "backlog_rows_max": int,  # group commit
    "sqlite_cache_mb": int, "pg_pool_max": int, "db_timeout_s": float,  # the database
    "key_filter_mb": int,  # the store's filter of keys surely never written
    "cache_entries_max": int,  # catalog documents per table; customers' entitlements
    "body_bytes_max": int,
    # HTTP requests one process works on at once, how long one may wait for a slot, and
    # how many refusals a second go out at once (gateway/admission.py).
    "in_flight_max": int, "in_flight_wait_ms": int, "refusals_per_s": float,
    "recharge_concurrency_max": int, "recharge_queue_max": int,
    # Reads with a customer token (widgets, portal): per token, sustained and at once.
    "token_reads_per_s": float, "token_reads_burst": int,
}

_FEED_NUMBERS: dict[str, type] = {
    "subscribers_max": int, "customer_subscribers_max": int, "backlog_max": int,
    "replay_max": int, "heartbeat_s": float, "ping_interval_s": float, "ping_timeout_s": float,
}


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = None
    # "key" or "environment:key"; a bare key belongs to the `default` environment.
    api_keys: list[str] = field(default_factory=list)
    durability: str = "sync"
    body_bytes_max: int = 1_048_576
    in_flight_max: int = 80
    in_flight_wait_ms: int = 5
    refusals_per_s: float = 500.0
    # Memory and queues (LIMITS above; docs/operations.md). The runtime keeps resident
    # customers and their remembered keys within `memory_mb` (estimated); the other limits
    # bound counts.
    memory_mb: int = 256
    resident_max: int = 200_000
    mailbox_max: int = 4096
    pending_max: int = 200_000
    batch_max: int = 512
    workers: int = 128
    passivate_after_s: float = 600.0
    flush_rows_max: int = 8192
    backlog_rows_max: int = 131_072
    sqlite_cache_mb: int = 32
    pg_pool_max: int = 8
    db_timeout_s: float = 10.0
    key_filter_mb: int = 32
    cache_entries_max: int = 100_000
    recharge_concurrency_max: int = 16
    recharge_queue_max: int = 10_000
    token_reads_per_s: float = 20.0
    token_reads_burst: int = 60
    # Which sites may show /portal in a frame (CSP frame-ancestors; "*": any, "'none'": none).
    portal_frame_ancestors: str = "*"
    # Webhooks (docs/webhooks.md): whether endpoints may resolve to private, loopback or
    # link-local addresses; which HTTP client sends ("pooled" or "httpx"); the per-attempt
    # timeout, the concurrency, and the retry schedule.
    webhooks_allow_private: bool = False
    webhooks_client: str = "pooled"
    webhooks_timeout_ms: int = 10_000
    webhooks_concurrency_max: int = 64
    webhooks_retry_base_ms: int = 30_000
    webhooks_retry_cap_ms: int = 12 * 3_600_000
    webhooks_attempts_max: int = 12
    # Live feed (docs/feed.md): subscriber limits, per-subscriber backlog of unsent events,
    # how far back a resume may replay, heartbeat and protocol ping periods; the secret that
    # signs customer tokens (None: generated once and kept in the database).
    feed_subscribers_max: int = 10_000
    feed_customer_subscribers_max: int = 1_000
    feed_backlog_max: int = 1_000
    feed_replay_max: int = 10_000
    feed_heartbeat_s: float = 15.0
    feed_ping_interval_s: float = 20.0
    feed_ping_timeout_s: float = 20.0
    token_secret: str | None = None
    # Auto-recharge (docs/auto-recharge.md): the payment provider ("record", the default,
    # records charges invoice-style; "decline", "hang" and "charge-then-hang" are for tests
    # and demonstrations), the per-attempt timeout and the first retry delay.
    recharge_provider: str = "record"
    recharge_timeout_s: float = 30.0
    recharge_retry_base_s: float = 1.0
    # "system", or "manual" (optionally "manual:<ISO time>" to start there): a clock that
    # moves only through PUT /api/v1/test-clock, for integration tests of renewals, trials
    # and usage resets (docs/operations.md). Never in production.
    clock: str = "system"
    # Exclusive tax per billing country for subscription estimates (CREDITD_TAX_RATES,
    # "DE=19,GB=20": percent, exact decimals; country codes compared case-insensitively).
    tax_rates: dict[str, Decimal] = field(default_factory=dict)
    # Prometheus metrics at GET /metrics (docs/metrics.md): "on" or "off" (no route, and no
    # per-request counting); a scrape needs an API key of any environment, or this bearer
    # token (None: API keys only), which Prometheus can read from a file.
    metrics: str = "on"
    metrics_token: str | None = None
    # Scale-out (docs/operations.md, "Running a cluster"): on PostgreSQL every process
    # takes shard leases ("auto"); "off" runs one process without them (never two so).
    cluster: str = "auto"
    cluster_host: str = "127.0.0.1"  # where the internal channel listens
    cluster_port: int = 0  # 0: any free port (what peers use is in shard_leases)
    cluster_advertise: str | None = None  # host:port peers connect to (default host:port)
    lease_ttl_s: float = 3.0
    lease_renew_s: float = 0.5

    def __post_init__(self) -> None:
        if self.durability not in ("sync", "async"):
            raise ConfigError(f"CREDITD_DURABILITY: {self.durability!r} is not 'sync' or 'async'")
        if self.webhooks_client not in ("pooled", "httpx"):
            raise ConfigError(f"CREDITD_WEBHOOKS_CLIENT: {self.webhooks_client!r} is not "
                              "'pooled' or 'httpx'")
        if min(self.webhooks_timeout_ms, self.webhooks_concurrency_max,
               self.webhooks_retry_base_ms, self.webhooks_attempts_max) <= 0:
            raise ConfigError("CREDITD_WEBHOOKS_*: timeouts, concurrency, retry base and "
                              "attempts must be positive")
        for name in _FEED_NUMBERS:
            if getattr(self, f"feed_{name}") <= 0:
                raise ConfigError(f"CREDITD_FEED_{name.upper()}: must be positive")
        for name in LIMITS:
            if getattr(self, name) <= 0:
                raise ConfigError(f"CREDITD_{name.upper()}: must be positive")
        if self.flush_rows_max > self.backlog_rows_max:
            raise ConfigError("CREDITD_FLUSH_ROWS_MAX: must not exceed CREDITD_BACKLOG_ROWS_MAX")
        if self.recharge_provider not in ("record", "decline", "hang", "charge-then-hang"):
            raise ConfigError(f"CREDITD_RECHARGE_PROVIDER: {self.recharge_provider!r} is not "
                              "'record', 'decline', 'hang' or 'charge-then-hang'")
        if self.recharge_timeout_s <= 0 or self.recharge_retry_base_s <= 0:
            raise ConfigError("CREDITD_RECHARGE_TIMEOUT_S / _RETRY_BASE_S: must be positive")
        kind, _, start = self.clock.partition(":")
        if self.clock != "system" and kind != "manual":
            raise ConfigError(f"CREDITD_CLOCK: {self.clock!r} is not 'system' or "
                              "'manual[:<ISO time>]'")
        if start:
            try:
                datetime.fromisoformat(start.replace("Z", "+00:00"))
            except ValueError:
                raise ConfigError(f"CREDITD_CLOCK: {start!r} is not an ISO-8601 time") from None
        if not self.portal_frame_ancestors.strip() or any(
                c in self.portal_frame_ancestors for c in ";,\r\n"):
            raise ConfigError("CREDITD_PORTAL_FRAME_ANCESTORS: sources separated by spaces "
                              "(e.g. \"https://app.example.com\"), not empty, no ';' or ','")
        if self.cluster not in ("auto", "off"):
            raise ConfigError(f"CREDITD_CLUSTER: {self.cluster!r} is not 'auto' or 'off'")
        if not 0 < self.lease_renew_s < self.lease_ttl_s / 2:
            raise ConfigError("CREDITD_LEASE_RENEW_S: must be positive and under half of "
                              "CREDITD_LEASE_TTL_S (a lease must survive a missed renewal)")
        if not 0 <= self.cluster_port <= 65535:
            raise ConfigError("CREDITD_CLUSTER_PORT: not a port number")
        if self.metrics not in ("on", "off"):
            raise ConfigError(f"CREDITD_METRICS: {self.metrics!r} is not 'on' or 'off'")
        if self.metrics_token is not None and (
                len(self.metrics_token) < 16 or not self.metrics_token.isascii()
                or not self.metrics_token.isprintable() or " " in self.metrics_token):
            raise ConfigError("CREDITD_METRICS_TOKEN: at least 16 printable ASCII characters, "
                              "no spaces")
        if self.token_secret is not None and len(self.token_secret) < 32:
            raise ConfigError("CREDITD_TOKEN_SECRET: must be at least 32 characters "
                              "(HS256 wants a key as long as its hash)")

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "host": os.environ.get("CREDITD_HOST", cls.host),
            "port": _port(os.environ.get("CREDITD_PORT", str(cls.port))),
            "database_url": os.environ.get("CREDITD_DATABASE_URL") or None,
            "api_keys": _keys(os.environ.get("CREDITD_API_KEYS")),
            "durability": os.environ.get("CREDITD_DURABILITY", "sync"),
            "webhooks_allow_private": _flag(os.environ.get("CREDITD_WEBHOOKS_ALLOW_PRIVATE")),
            "webhooks_client": os.environ.get("CREDITD_WEBHOOKS_CLIENT", cls.webhooks_client),
        }
        for name in ("timeout_ms", "concurrency_max", "retry_base_ms", "retry_cap_ms",
                     "attempts_max"):
            _number(values, "webhooks", name, int)
        for name, kind in _FEED_NUMBERS.items():
            _number(values, "feed", name, kind)
        for name, kind in LIMITS.items():
            _number(values, "", name, kind)
        values["token_secret"] = os.environ.get("CREDITD_TOKEN_SECRET") or None
        values["portal_frame_ancestors"] = (os.environ.get("CREDITD_PORTAL_FRAME_ANCESTORS")
                                            or cls.portal_frame_ancestors)
        values["recharge_provider"] = os.environ.get("CREDITD_RECHARGE_PROVIDER", "record")
        values["clock"] = os.environ.get("CREDITD_CLOCK") or "system"
        values["metrics"] = (os.environ.get("CREDITD_METRICS") or "on").strip().lower()
        values["metrics_token"] = (os.environ.get("CREDITD_METRICS_TOKEN") or "").strip() or None
        values["cluster"] = (os.environ.get("CREDITD_CLUSTER") or "auto").strip().lower()
        values["cluster_host"] = os.environ.get("CREDITD_CLUSTER_HOST") or cls.cluster_host
        values["cluster_advertise"] = os.environ.get("CREDITD_CLUSTER_ADVERTISE") or None
        _number(values, "cluster", "port", int)
        for name in ("ttl_s", "renew_s"):
            _number(values, "lease", name, float)
        try:
            values["tax_rates"] = parse_tax_rates(os.environ.get("CREDITD_TAX_RATES"))
        except ValueError as exc:
            raise ConfigError(f"CREDITD_TAX_RATES: {exc}") from None
        for name in ("timeout_s", "retry_base_s"):
            _number(values, "recharge", name, float)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
