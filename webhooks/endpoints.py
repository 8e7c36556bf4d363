"""Webhook endpoints: what one is, and the in-memory registry of them.

Endpoints change at admin pace and every event is matched against them, so all of them are
held in memory (at most `ENDPOINTS_PER_ENVIRONMENT_MAX` per environment), loaded at start
and changed only through `webhooks.service.Webhooks`, which writes the database first.
One creditd process owns a database (docs/architecture.md), so the registry stays coherent.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from webhooks.events import EVENT_TYPES
from webhooks.sender import Target, parse_target
from webhooks.signing import secret_key

__all__ = ["Endpoint", "Registry", "new_endpoint_id", "check_event_types",
           "ENDPOINTS_PER_ENVIRONMENT_MAX", "DESCRIPTION_CHARS_MAX", "GONE", "MANUAL"]

ENDPOINTS_PER_ENVIRONMENT_MAX = 100
DESCRIPTION_CHARS_MAX = 1000
# Why an endpoint is disabled.
MANUAL = "MANUAL"  # PATCH enabled=false
GONE = "GONE"  # the receiver answered 410 Gone

_json = msgspec.json.Encoder(order="deterministic").encode
_decode_types = msgspec.json.Decoder(list[str]).decode


def new_endpoint_id() -> str:
    return "we_" + secrets.token_hex(12)


def check_event_types(types: Sequence[str]) -> tuple[int, str] | None:
    """The index and text of the first unknown event type, if any."""
    for i, t in enumerate(types):
        if t not in EVENT_TYPES:
            return i, t
    return None


class Endpoint(msgspec.Struct, kw_only=True):
    id: str
    environment: str
    url: str
    description: str | None
    event_types: list[str]  # empty: every type
    enabled: bool
    disabled_reason: str | None
    secret: str
    previous_secret: str | None
    previous_secret_until: int | None
    created_at: int
    updated_at: int

    def row(self) -> tuple[Any, ...]:
        """In tables.ENDPOINT_COLUMNS order."""
        return (self.id, self.environment, self.url, self.description,
                _json(self.event_types).decode(), self.enabled, self.disabled_reason,
                self.secret, self.previous_secret, self.previous_secret_until,
                self.created_at, self.updated_at)

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> Endpoint:
        return cls(id=r[0], environment=r[1], url=r[2], description=r[3],
                   event_types=_decode_types(r[4]), enabled=bool(r[5]), disabled_reason=r[6],
                   secret=r[7], previous_secret=r[8], previous_secret_until=r[9],
                   created_at=int(r[10]), updated_at=int(r[11]))

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types

    def keys(self, now_ms: int) -> list[bytes]:
        """The HMAC keys that sign now: the secret, and the previous one during the
        rotation's overlap."""
        keys = [secret_key(self.secret)]
        if (self.previous_secret is not None and self.previous_secret_until is not None
                and now_ms < self.previous_secret_until):
            keys.append(secret_key(self.previous_secret))
        return keys

    @property
    def target(self) -> Target:
        return parse_target(self.url)


class Registry:
    """Every live endpoint, by id and by environment."""

    def __init__(self) -> None:
        self._by_id: dict[str, Endpoint] = {}
        self._by_environment: dict[str, dict[str, Endpoint]] = {}
        self._targets: dict[str, Target] = {}

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, endpoint_id: str) -> Endpoint | None:
        return self._by_id.get(endpoint_id)

    def put(self, endpoint: Endpoint) -> None:
        self._by_id[endpoint.id] = endpoint
        self._by_environment.setdefault(endpoint.environment, {})[endpoint.id] = endpoint
        self._targets[endpoint.id] = endpoint.target

    def remove(self, endpoint_id: str) -> None:
        endpoint = self._by_id.pop(endpoint_id, None)
        self._targets.pop(endpoint_id, None)
        if endpoint is not None:
            environment = self._by_environment[endpoint.environment]
            environment.pop(endpoint_id, None)
            if not environment:
                del self._by_environment[endpoint.environment]

    def target(self, endpoint_id: str) -> Target:
        return self._targets[endpoint_id]

    def in_environment(self, environment: str) -> list[Endpoint]:
        return list(self._by_environment.get(environment, {}).values())

    def has_environment(self, environment: str) -> bool:
        return environment in self._by_environment

    def count(self, environment: str) -> int:
        return len(self._by_environment.get(environment, ()))
