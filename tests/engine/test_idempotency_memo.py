"""What memory holds per remembered key (engine/core/idempotency.py): one `bytes` memo.

- a memo gives back the request's digest, its time and its reply exactly, for every kind
  of reply (a consumption's in its compact form or not, any other reply);
- the store writes a memo's parts and builds the same memo from its row, without decoding
  the reply;
- a state remembers each key as one bytes value, which a replay answers from, and a
  different request under the key is refused.
"""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from engine.core.commands import (
    BalanceView,
    Consume,
    ConsumeReply,
    CreateGrant,
    GrantReply,
    Refused,
)
from engine.core.effects import Effects
from engine.core.idempotency import (
    IdempotencyRecord,
    created_at_of,
    is_replay,
    recall,
    remember,
    request_digest,
)
from engine.core.machine import apply
from engine.core.model import CustomerState, GrantType
from engine.core.refusals import Refusal
from persistence.codec import key_from

ids = st.text(min_size=1, max_size=40)
units = st.integers(min_value=-(2**62), max_value=2**62)
times = st.integers(min_value=0, max_value=2**50)


@st.composite
def consume_replies(draw: st.DrawFn) -> tuple[ConsumeReply, int]:
    """A consumption's reply and the time it is remembered at: mostly its own time (the
    compact form), sometimes not (the tagged map)."""
    created_at = draw(times)
    stamp = created_at if draw(st.booleans()) else draw(times)
    balance = BalanceView(draw(ids), draw(st.none() | ids), draw(units), draw(units),
                          draw(units), draw(units), draw(st.sampled_from([created_at, stamp])),
                          draw(st.booleans()))
    reply = ConsumeReply(amount=draw(units), breakdown=tuple(draw(st.lists(
        st.tuples(ids, units), max_size=4))), balance=balance, timestamp=stamp,
        overdraft=draw(units))
    return reply, created_at


@given(consume_replies(), st.binary(min_size=16, max_size=16))
def test_a_memo_gives_back_the_digest_the_time_and_the_reply(
        drawn: tuple[ConsumeReply, int], digest: bytes) -> None:
    reply, created_at = drawn
    memo = remember(digest, reply, created_at)
    assert type(memo) is bytes
    assert recall(memo) == reply
    assert created_at_of(memo) == created_at
    assert is_replay(memo, digest)
    other = bytes([digest[0] ^ 1]) + digest[1:]
    assert not is_replay(memo, other)


def test_any_reply_is_remembered_exactly() -> None:
    state, fx = CustomerState("c"), Effects()
    reply = apply(state, CreateGrant(grant_id="g", currency_id="tokens", amount=10**9,
                                     grant_type=GrantType.PAID, display_name="Credits",
                                     metadata={"a": "b"}), 1_000, fx)
    assert isinstance(reply, GrantReply)
    memo = remember(b"d" * 16, reply, 1_000)
    assert recall(memo) == reply and created_at_of(memo) == 1_000


@given(consume_replies(), st.binary(min_size=16, max_size=16), st.none() | units)
def test_the_store_row_of_a_key_gives_back_the_same_memo(
        drawn: tuple[ConsumeReply, int], digest: bytes, op_seq: int | None) -> None:
    """persistence.codec writes (customer, key, created_at, op_seq, request, reply) and
    reads the row back into a record: the memo is the same bytes, the reply undecoded."""
    reply, created_at = drawn
    record = IdempotencyRecord(key="k", memo=remember(digest, reply, created_at),
                               op_seq=op_seq)
    row = (7, record.key, record.created_at, record.op_seq, record.request,
           record.stored_reply)
    assert key_from(row) == record
    assert key_from(row).reply == reply


def test_a_state_remembers_a_key_as_one_bytes_value_and_answers_replays_from_it() -> None:
    state, fx = CustomerState("c"), Effects()
    apply(state, CreateGrant(grant_id="g", currency_id="tokens", amount=10**9,
                             grant_type=GrantType.PAID, display_name="Credits"), 1_000, fx)
    first = apply(state, Consume(currency_id="tokens", amount=5, idempotency_key="k"),
                  2_000, fx)
    assert isinstance(first, ConsumeReply)
    memo = state.idempotency["k"]
    assert type(memo) is bytes
    assert memo.startswith(request_digest(Consume(currency_id="tokens", amount=5,
                                                  idempotency_key="k")))
    [record] = [r for r in fx.keys if r.key == "k"]
    assert record.memo is memo and record.created_at == 2_000 and record.op_seq is not None

    fx = Effects()
    again = apply(state, Consume(currency_id="tokens", amount=5, idempotency_key="k"),
                  9_000, fx)
    assert again == first and not fx.keys and not fx.entries  # the first reply, nothing new
    other = apply(state, Consume(currency_id="tokens", amount=6, idempotency_key="k"),
                  9_000, fx)
    assert isinstance(other, Refused) and other.code == Refusal.IDEMPOTENCY_KEY_REUSED
    assert msgspec.json.encode(again) == msgspec.json.encode(first)
