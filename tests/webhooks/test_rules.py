"""The pure parts: signatures (checked by `standardwebhooks`, the spec's reference
library), secrets, the retry schedule, the address rules, payloads."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import datetime, timezone

import msgspec
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from engine.core.commands import BalanceView
from engine.core.effects import DomainEvent
from engine.core.model import EventType
from webhooks.addresses import refusal
from webhooks.events import EVENT_TYPES, build
from webhooks.schedule import RetryPolicy
from webhooks.signing import headers, new_secret, secret_key, sign


def _verify(secret: str, body: bytes, signed: list[tuple[bytes, bytes]]) -> object:
    return Webhook(secret).verify(body, {k.decode(): v.decode() for k, v in signed})


def test_signatures_verify_with_the_reference_library() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(secret_key(secret)) == 32
    body = b'{"id":"evt_1","type":"credits.granted"}'
    signed = headers([secret_key(secret)], "evt_1", int(time.time()), body)
    assert _verify(secret, body, signed) == {"id": "evt_1", "type": "credits.granted"}
    with pytest.raises(WebhookVerificationError):
        _verify(new_secret(), body, signed)
    with pytest.raises(WebhookVerificationError):
        _verify(secret, body + b" ", signed)


def test_during_a_rotation_both_secrets_sign() -> None:
    old, new = new_secret(), new_secret()
    body = b"{}"
    signed = headers([secret_key(new), secret_key(old)], "evt_2", int(time.time()), body)
    for secret in (old, new):
        _verify(secret, body, signed)
    assert len(dict(signed)[b"webhook-signature"].split(b" ")) == 2


def test_the_signature_is_the_reference_librarys_over_id_timestamp_body() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the spec's example secret
    body = '{"test": 2432232314}'
    reference = Webhook(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek",
                                     datetime.fromtimestamp(1614265330, tz=timezone.utc), body)
    assert sign([secret_key(secret)], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                body.encode()) == reference


@pytest.mark.parametrize("secret, reason", [
    ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with"),
    ("whsec_!!!!", "base64"),
    ("whsec_c2hvcnQ=", "must encode 24 to 64 bytes"),
])
def test_malformed_secrets_are_refused(secret, reason) -> None:
    with pytest.raises(ValueError, match=reason):
        secret_key(secret)


def test_the_default_schedule_backs_off_over_hours_then_gives_up() -> None:
    policy = RetryPolicy()
    minutes = [round(w / 60_000, 1) for w in policy.table()]
    assert minutes == [0.5, 1.5, 4.5, 13.5, 40.5, 121.5, 364.5, 720.0, 720.0, 720.0, 720.0]
    assert round(sum(policy.table()) / 3_600_000, 1) == 57.1
    rng = random.Random(3)
    for failed in range(1, policy.attempts_max):
        for _ in range(50):
            wait = policy.next_attempt_at(0, failed, rng)
            base = policy.wait_ms(failed)
            assert base * 0.8 - 1 <= wait <= base * 1.2 + 1
    assert policy.next_attempt_at(0, policy.attempts_max, rng) is None


def test_jitter_spreads_a_backlog() -> None:
    policy = RetryPolicy()
    rng = random.Random(1)
    waits = [policy.next_attempt_at(0, 3, rng) for _ in range(1000)]
    assert len(set(waits)) > 900  # not one thundering herd
    assert 0.95 < (sum(waits) / len(waits)) / policy.wait_ms(3) < 1.05


@pytest.mark.parametrize("address, why", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"),
    ("fd00::1", "private"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("0.0.0.0", "not a public"), ("224.0.0.1", "not a public"), ("100.64.0.1", "not a public"),
])
def test_non_public_addresses_are_refused(address, why) -> None:
    assert why in (refusal(address) or "")


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
                                     "1.1.1.1"])
def test_public_addresses_are_allowed(address) -> None:
    assert refusal(address) is None


def test_every_engine_event_type_is_a_webhook_event_type() -> None:
    assert set(EVENT_TYPES) == {t.value for t in EventType}
    assert len(EVENT_TYPES) >= 7


def test_a_payload_names_the_customer_without_its_environment_and_has_a_stable_id() -> None:
    event = DomainEvent(seq=4, type=EventType.BALANCE_DEPLETED, customer_id="prod/acme",
                        currency_id="tokens", resource_id=None, timestamp=1_767_225_600_123,
                        balance=BalanceView("tokens", None, 0, 150_000, 150_000, 0,
                                            1_767_225_600_123))
    built = build(42, "prod/acme", event)
    again = build(42, "prod/acme", event)
    assert (built.environment, built.customer_id, built.event_id) == ("prod", "acme",
                                                                      again.event_id)
    assert built.event_id != build(43, "prod/acme", event).event_id
    body = msgspec.json.decode(built.body)
    assert body == {
        "id": built.event_id, "type": "credits.balance.depleted",
        "timestamp": "2026-01-01T00:00:00.123Z",
        "data": {"customerId": "acme", "currencyId": "tokens", "resourceId": None,
                 "sequence": 4, "amount": None, "grant": None,
                 "balance": {"currentBalance": 0, "totalGranted": 1.5, "totalConsumed": 1.5,
                             "reserved": 0, "hardLimit": True},
                 "details": None}}
    assert Counter(built.event_id)["_"] == 1
