"""Server settings, from the command line and the environment (CLI wins)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["Settings"]


def _keys(raw: str | None) -> list[str]:
    return [k.strip() for k in (raw or "").split(",") if k.strip()]


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = None
    # "key" or "environment:key"; a bare key belongs to the `default` environment.
    api_keys: list[str] = field(default_factory=list)
    durability: str = "sync"
    body_bytes_max: int = 1_048_576

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "host": os.environ.get("CREDITD_HOST", cls.host),
            "port": int(os.environ.get("CREDITD_PORT", cls.port)),
            "database_url": os.environ.get("CREDITD_DATABASE_URL") or None,
            "api_keys": _keys(os.environ.get("CREDITD_API_KEYS")),
            "durability": os.environ.get("CREDITD_DURABILITY", "sync"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
