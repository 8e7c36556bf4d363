"""Property-based tests of the pure credit core (engine.core).

`CoreMachine` drives one customer's `CustomerState` through random sequences of every
mutating command (grants of each type with priorities, expiries, future effective times and
payment waits; payment confirmations; consumptions with and without idempotency keys,
including same-body and different-body replays; voids; reservations and releases; pool
settings; time advancing through `Tick`; purges) over two currencies and a resource-scoped
pool, and checks after every step that:

- every pool's projections satisfy the accounting identity and `check_pool`;
- every pool's balance is the sum of its ledger entries' amounts;
- no non-overdraft grant has a negative component;
- a pool that has always been hard-limited never goes negative, and a hard-limited
  consumption is accepted exactly when it is covered by the balance;
- a soft-limited consumption is accepted down to the overdraft floor (-AMOUNT_UNITS_MAX);
- a grant creation gets exactly the refusal the documented precedence predicts;
- a refused command changes nothing and produces empty Effects;
- `rebuild()` from the definitions and the ledger, and `restore()` from rows, reproduce the
  live state (grant and reservation rows, pool totals and active order, threshold flags),
  and a restored state answers the next command with the same reply, ledger entries and
  events as the live one (a Tick's `next_due` may differ: the live timer heap keeps stale
  entries that it skips lazily, so it may wake earlier than a restored one);
- ledger and event sequence numbers are gapless;
- a same-body idempotent replay, however late, returns the original reply and produces no
  effects; a different body or command under the key is refused as a reused key.

`AuditorMachine` checks the engine against a small independent model of a hard-limited
pool (grant remainders, consumption order, holds, expiries and activations).
"""

from __future__ import annotations

import math
from collections import defaultdict

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from engine.core.amounts import AMOUNT_UNITS_MAX
from engine.core.commands import (
    ConfigurePool,
    ConfirmPayment,
    Consume,
    ConsumeReply,
    CreateGrant,
    GetBalances,
    Refused,
    Release,
    Reserve,
    Tick,
    TickReply,
    VoidGrant,
)
from engine.core.effects import Effects
from engine.core.idempotency import records
from engine.core.machine import apply, check_pool, purge
from engine.core.model import CustomerState, GrantStatus, GrantType
from engine.core.replay import (
    customer_row,
    grant_row,
    pool_row,
    rebuild,
    reservation_row,
    restore,
)

T0 = 1_700_000_000_000
CUSTOMER = "cust-1"
RESOURCE = "res-1"
# Two currencies, one of them also scoped to a resource; the last pool only ever exists
# through ConfigurePool or not at all (consuming from it is refused).
POOLS: list[tuple[str, str | None]] = [
    ("cred", None),
    ("tok", None),
    ("cred", RESOURCE),
    ("tok", RESOURCE),
]
GRANTABLE = [GrantType.PAID, GrantType.PROMOTIONAL, GrantType.RECURRING]


def mostly(valid, invalid):
    """`valid` nine times in ten, else `invalid` (refusal paths stay covered but rare)."""
    # Hypothesis favours boundary values, so the rare branch is an inner value.
    return st.tuples(st.integers(0, 9), valid, invalid).map(lambda t: t[2] if t[0] == 5 else t[1])


# Pool indices, weighted towards the first pool so that credits meet consumption.
POOL_I = st.sampled_from([0, 0, 0, 0, 1, 1, 2, 2, 3])
RARE = st.integers(0, 9).map(lambda x: x == 5)  # true about one time in ten

SETTINGS = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# ---------------------------------------------------------------------------------------
# Snapshots


def pool_totals(p) -> tuple:
    return (
        p.key,
        p.balance,
        p.reserved,
        p.granted,
        p.consumed,
        p.expired,
        p.voided,
        tuple(g.id for g in p.active),
        p.overdraft.id if p.overdraft is not None else None,
        p.active_granted,
    )


def flags(s: CustomerState) -> tuple:
    return (
        tuple((k, p.usage_low_fired, p.depleted_fired) for k, p in s.pools.items()),
        tuple((g.id, g.usage_low_fired, g.depleted_fired) for g in s.grants.values()),
    )


def fingerprint_state(s: CustomerState) -> tuple:
    """Everything a command could change, cheaply comparable."""
    return (
        customer_row(s),
        tuple(grant_row(g) for g in s.grants.values()),
        tuple(reservation_row(r) for r in s.reservations.values()),
        tuple((pool_row(p), pool_totals(p)) for p in s.pools.values()),
        flags(s),
        tuple(s.idempotency.items()),
        tuple(s.timers),
    )


def rows_of(s: CustomerState):
    return (
        customer_row(s),
        [grant_row(g) for g in s.grants.values()],
        [reservation_row(r) for r in s.reservations.values()],
        [pool_row(p) for p in s.pools.values()],
    )


def restored(s: CustomerState) -> CustomerState:
    c, g, r, p = rows_of(s)
    return restore(c, g, r, p, records(s.idempotency))


def grants_by_id(s: CustomerState) -> dict:
    return {gid: grant_row(g) for gid, g in s.grants.items()}


def reservations_by_id(s: CustomerState) -> dict:
    return {rid: reservation_row(r) for rid, r in s.reservations.items()}


def totals_by_key(s: CustomerState) -> dict:
    return {k: pool_totals(p) for k, p in s.pools.items()}


# ---------------------------------------------------------------------------------------
# The stateful test


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = CustomerState(CUSTOMER)
        self.now = T0
        self.entries: list = []
        self.events: list = []
        self.effects: list[Effects] = []
        self.n = 0
        # idempotency key -> (command, reply) for every key the engine remembered.
        self.keys: dict[str, tuple] = {}
        # Pools that have ever been soft-limited (they may carry an overdraft deficit).
        self.ever_soft: set = set()
        # Rows of reservations forgotten by purge(); rebuild() still needs their definitions.
        self.archived: dict[str, object] = {}

    @initialize(
        amounts=st.lists(st.integers(0, 1_000), min_size=3, max_size=3),
        soft=st.sets(st.sampled_from(range(len(POOLS)))),
    )
    def seed(self, amounts, soft):
        """Start with some credits (0 = none) in the first pools and some pools soft."""
        for key, amount in zip(POOLS, amounts):
            if amount:
                reply, _ = self.run(
                    CreateGrant(
                        grant_id=self.fresh("g"), currency_id=key[0], resource_id=key[1],
                        amount=amount, grant_type=GrantType.PAID, display_name="seed",
                    )
                )
                assert not isinstance(reply, Refused), reply
        for i in sorted(soft):
            self.run(ConfigurePool(currency_id=POOLS[i][0], resource_id=POOLS[i][1], hard_limit=False))
            self.ever_soft.add(POOLS[i])

    # -- helpers -------------------------------------------------------------------------

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def run(self, cmd):
        """Apply `cmd` to the live state and to a state restored from its rows; both must
        answer and write the same. A refusal must leave no trace."""
        shadow = restored(self.state)
        before = fingerprint_state(self.state)
        fx = Effects()
        reply = apply(self.state, cmd, self.now, fx)
        sfx = Effects()
        sreply = apply(shadow, cmd, self.now, sfx)
        if isinstance(reply, TickReply):
            # next_due is a wake-up hint; the live heap may still hold stale (skipped) timers.
            assert isinstance(sreply, TickReply)
            if sreply.next_due is not None:
                assert reply.next_due is not None and reply.next_due <= sreply.next_due
        else:
            assert sreply == reply, (cmd, reply, sreply)
        assert sfx.entries == fx.entries, (cmd, fx.entries, sfx.entries)
        assert sfx.events == fx.events, (cmd, fx.events, sfx.events)
        assert sfx.keys == fx.keys
        # ... and both end in the same state.
        assert grants_by_id(shadow) == grants_by_id(self.state)
        assert reservations_by_id(shadow) == reservations_by_id(self.state)
        assert totals_by_key(shadow) == totals_by_key(self.state)
        assert flags(shadow) == flags(self.state)
        assert customer_row(shadow) == customer_row(self.state)
        self.effects.append(fx)
        self.entries.extend(fx.entries)
        self.events.extend(fx.events)
        if isinstance(reply, Refused):
            assert not fx, (cmd, reply, fx.entries, fx.events)
            assert fingerprint_state(self.state) == before, (cmd, reply)
        elif cmd.idempotency_key is not None and cmd.idempotency_key not in self.keys:
            self.keys[cmd.idempotency_key] = (cmd, reply)
        return reply, fx

    def key_for(self, keyed: bool) -> str | None:
        return self.fresh("key-") if keyed else None

    # -- rules ---------------------------------------------------------------------------

    @rule(
        pool_i=POOL_I,
        gtype=st.sampled_from(GRANTABLE),
        amount=mostly(st.integers(1, 1_000), st.sampled_from([0, AMOUNT_UNITS_MAX])),
        priority=mostly(st.sampled_from([0, 10, 50, 50, 50, 100]), st.just(101)),
        expire_off=st.one_of(st.none(), mostly(st.integers(1, 20_000), st.integers(-50, 0))),
        effective_off=st.one_of(st.none(), st.none(), st.integers(-1_000, 10_000)),
        await_payment=st.integers(0, 9).map(lambda x: x in (3, 5, 7)),
        id_mode=mostly(st.just("fresh"), st.sampled_from(["taken", "overdraft", "empty"])),
        keyed=st.booleans(),
    )
    def create_grant(
        self, pool_i, gtype, amount, priority, expire_off, effective_off, await_payment,
        id_mode, keyed,
    ):
        cur, res = POOLS[pool_i]
        ids = list(self.state.grants)
        if id_mode == "taken" and ids:
            gid = ids[0]
        elif id_mode == "overdraft":
            gid = f"overdraft:{cur}:"
        elif id_mode == "empty":
            gid = ""
        else:
            gid = self.fresh("g")
        effective_at = None if effective_off is None else self.now + effective_off
        # Relative to effectiveAt when given: a grant effective in the past may then have
        # an expiry that has already passed too.
        expire_at = None
        if expire_off is not None:
            expire_at = (self.now if effective_at is None else effective_at) + expire_off
        cmd = CreateGrant(
            grant_id=gid, currency_id=cur, resource_id=res, amount=amount, grant_type=gtype,
            display_name=f"grant {gid}", priority=priority, effective_at=effective_at,
            expire_at=expire_at, await_payment=await_payment,
            idempotency_key=self.key_for(keyed),
        )
        # The refusal, in the documented order of precedence (the key, if any, is fresh).
        pool = self.state.pools.get((cur, res))
        waiting = sum(
            g.amount for g in self.state.grants.values()
            if (g.currency_id, g.resource_id) == (cur, res)
            and g.status in (GrantStatus.SCHEDULED, GrantStatus.PAYMENT_PENDING)
        )
        outstanding = 0 if pool is None else max(pool.balance, 0) + pool.reserved + waiting
        if not 0 < amount <= AMOUNT_UNITS_MAX:
            expected = "INVALID_AMOUNT"
        elif not gid or gid.startswith("overdraft:"):
            expected = "INVALID_GRANT_ID"
        elif not 0 <= priority <= 100:
            expected = "INVALID_PRIORITY"
        elif expire_at is not None and effective_at is not None and expire_at <= effective_at:
            expected = "INVALID_DATES"
        elif gid in self.state.grants:
            expected = "GRANT_ID_TAKEN"
        elif expire_at is not None and expire_at <= self.now:
            expected = "INVALID_DATES"
        elif outstanding + amount > AMOUNT_UNITS_MAX:
            expected = "BALANCE_LIMIT_EXCEEDED"
        else:
            expected = None
        balance_before = None if pool is None else pool.balance
        reply, fx = self.run(cmd)
        assert (reply.code if isinstance(reply, Refused) else None) == expected, (cmd, reply)
        if not isinstance(reply, Refused):
            g = self.state.grants[gid]
            assert g.amount == amount
            activated_now = not await_payment and (effective_at is None or effective_at <= self.now)
            assert g.activated == activated_now
            pool = self.state.pools[(cur, res)]
            if balance_before is not None and activated_now:
                # A new grant adds its whole amount (repaying an overdraft moves nothing).
                assert pool.balance == balance_before + amount

    @precondition(lambda self: any(
        g.status is GrantStatus.PAYMENT_PENDING for g in self.state.grants.values()))
    @rule(pick=st.integers(0, 1_000), unknown=RARE, keyed=st.booleans())
    def confirm_payment(self, pick, unknown, keyed):
        ids = [g.id for g in self.state.grants.values()
               if g.status is GrantStatus.PAYMENT_PENDING or pick % 4 == 0]
        gid = "no-such-grant" if unknown or not ids else ids[pick % len(ids)]
        self.run(ConfirmPayment(grant_id=gid, idempotency_key=self.key_for(keyed)))

    @rule(
        pool_i=POOL_I,
        # 0 is refused; a maximal amount overdraws a soft pool down to its floor.
        amount=mostly(st.integers(1, 150), st.sampled_from([0, AMOUNT_UNITS_MAX])),
        keyed=st.booleans(),
        feature=st.sampled_from([None, "feat-a", "feat-b"]),
    )
    def consume(self, pool_i, amount, keyed, feature):
        self._consume(POOLS[pool_i], amount, keyed, feature)

    @rule(pool_i=POOL_I, delta=st.integers(-1, 1), keyed=st.booleans())
    def consume_around_balance(self, pool_i, delta, keyed):
        """Consume exactly the balance, one unit less, or one unit more (the hard-limit edge)."""
        pool = self.state.pools.get(POOLS[pool_i])
        base = 0 if pool is None else pool.balance
        amount = max(base + delta, 1)
        self._consume(POOLS[pool_i], amount, keyed, None)

    def _consume(self, key, amount, keyed, feature):
        cur, res = key
        cmd = Consume(
            currency_id=cur, resource_id=res, amount=amount, feature_id=feature,
            dimensions={"region": "eu", "n": 3} if feature == "feat-b" else None,
            idempotency_key=self.key_for(keyed),
        )
        pool = self.state.pools.get(key)
        hard = pool is None or pool.hard_limit
        balance = 0 if pool is None else pool.balance
        reply, fx = self.run(cmd)
        if not 0 < amount <= AMOUNT_UNITS_MAX:
            assert isinstance(reply, Refused) and reply.code == "INVALID_AMOUNT", reply
            return
        if pool is None:
            assert isinstance(reply, Refused) and reply.code == "INSUFFICIENT_CREDITS"
            return
        if hard:
            # Hard limit: accepted iff covered by the current balance.
            assert isinstance(reply, ConsumeReply) == (amount <= balance), (amount, balance, reply)
        else:
            # Soft limit: accepted down to the overdraft floor.
            ok = balance - amount >= -AMOUNT_UNITS_MAX
            assert isinstance(reply, ConsumeReply) == ok, (amount, balance, reply)
        if isinstance(reply, ConsumeReply):
            assert reply.amount == amount
            assert sum(units for _, units in reply.breakdown) == amount
            assert reply.balance.current_balance == balance - amount
            assert sum(e.amount for e in fx.entries) == -amount
            if hard:
                assert reply.overdraft == 0

    @precondition(lambda self: bool(self.state.grants))
    @rule(pick=st.integers(0, 1_000), unknown=RARE, keyed=st.booleans())
    def void(self, pick, unknown, keyed):
        ids = list(self.state.grants)
        gid = "no-such-grant" if unknown or not ids else ids[pick % len(ids)]
        g = self.state.grants.get(gid)
        reply, _ = self.run(VoidGrant(grant_id=gid, idempotency_key=self.key_for(keyed)))
        if g is not None and not isinstance(reply, Refused):
            assert g.status is GrantStatus.VOIDED and g.available == 0

    @rule(
        pool_i=POOL_I,
        amount=mostly(st.integers(1, 150), st.just(0)),
        ttl=mostly(st.integers(1, 15_000), st.just(0)),
        reuse=RARE,
        keyed=st.booleans(),
    )
    def reserve(self, pool_i, amount, ttl, reuse, keyed):
        cur, res = POOLS[pool_i]
        ids = list(self.state.reservations)
        rid = ids[-1] if reuse and ids else self.fresh("r")
        pool = self.state.pools.get((cur, res))
        balance = 0 if pool is None else pool.balance
        reply, _ = self.run(
            Reserve(
                reservation_id=rid, currency_id=cur, resource_id=res, amount=amount,
                expires_at=self.now + ttl, idempotency_key=self.key_for(keyed),
            )
        )
        if not isinstance(reply, Refused):
            # A hold is always backed by real credits, soft limit or not.
            assert 0 < amount <= balance
            assert self.state.pools[(cur, res)].balance == balance - amount

    @precondition(lambda self: any(
        r.status.value == "ACTIVE" for r in self.state.reservations.values()))
    @rule(
        pick=st.integers(0, 1_000),
        unknown=RARE,
        consumed_mode=st.sampled_from(["zero", "part", "all", "over"]),
        percent=st.integers(0, 100),
        pool_arg=st.sampled_from(["none", "none", "right", "right", "wrong"]),
        keyed=st.booleans(),
        feature=st.sampled_from([None, "feat-a"]),
    )
    def release(self, pick, unknown, consumed_mode, percent, pool_arg, keyed, feature):
        ids = [rid for rid, r in self.state.reservations.items()
               if r.status.value == "ACTIVE" or pick % 4 == 0]
        rid = "no-such-reservation" if unknown or not ids else ids[pick % len(ids)]
        r = self.state.reservations.get(rid)
        amount = 0 if r is None else r.amount
        consumed = {
            "zero": 0,
            "part": amount * percent // 100,
            "all": amount,
            "over": amount + 1,
        }[consumed_mode]
        cur = res = None
        if r is not None and pool_arg == "right":
            cur, res = r.currency_id, r.resource_id
        elif pool_arg == "wrong":
            cur = "tok" if r is None or r.currency_id == "cred" else "cred"
        pool = None if r is None else self.state.pools[(r.currency_id, r.resource_id)]
        balance = None if pool is None else pool.balance
        active = r is not None and r.status.value == "ACTIVE"
        reply, _ = self.run(
            Release(
                reservation_id=rid, consumed_amount=consumed, currency_id=cur,
                resource_id=res, feature_id=feature, idempotency_key=self.key_for(keyed),
            )
        )
        if consumed > amount and pool is not None and pool.hard_limit and (
                consumed - amount > balance):
            # Beyond the hold is consumed normally, so a hard limit refuses what the
            # balance cannot cover.
            assert isinstance(reply, Refused)
        if not isinstance(reply, Refused):
            assert active and r.consumed_amount == consumed
            # What was held returns, less what was consumed, less what a grant that expired
            # or was voided meanwhile forfeits.
            assert pool.balance <= balance + amount - consumed

    @rule(
        pool_i=POOL_I,
        percent=st.integers(1, 100),
        void_held=st.booleans(),
        consumed_mode=st.sampled_from(["zero", "part", "all", "over"]),
        consume_between=st.integers(0, 200),
    )
    def reserve_then_release(self, pool_i, percent, void_held, consumed_mode, consume_between):
        """A reservation's whole life in one step, possibly with the grant under its holds
        voided, and a consumption (maybe overdrawing a soft pool) while it is held."""
        cur, res = POOLS[pool_i]
        pool = self.state.pools.get((cur, res))
        if pool is None or pool.balance <= 0:
            return
        amount = max(1, pool.balance * percent // 100)
        rid = self.fresh("r")
        reply, _ = self.run(
            Reserve(reservation_id=rid, currency_id=cur, resource_id=res, amount=amount,
                    expires_at=self.now + 60_000)
        )
        assert not isinstance(reply, Refused), reply
        r = self.state.reservations[rid]
        if void_held:
            gid = next(iter(r.holds))
            reply, _ = self.run(VoidGrant(grant_id=gid))
            assert not isinstance(reply, Refused), reply
            assert self.state.grants[gid].held >= r.holds[gid]
        if consume_between:
            self._consume((cur, res), consume_between, False, None)
        consumed = {"zero": 0, "part": amount // 2, "all": amount, "over": amount + 1}[
            consumed_mode
        ]
        balance = pool.balance
        reply, _ = self.run(Release(reservation_id=rid, consumed_amount=consumed))
        if consumed > amount and pool.hard_limit and consumed - amount > balance:
            # Beyond the hold is consumed normally: a hard limit refuses what the balance
            # cannot cover, and the reservation stays as it was.
            assert isinstance(reply, Refused) and reply.code == "INSUFFICIENT_CREDITS"
            assert r.status.value == "ACTIVE" and pool.balance == balance
            return
        assert not isinstance(reply, Refused), reply
        assert r.status.value == "RELEASED" and r.consumed_amount == consumed
        forfeited = r.holds[gid] - min(r.holds[gid], consumed) if void_held else 0
        assert pool.balance == balance + amount - consumed - forfeited

    @rule(
        pool_i=POOL_I,
        hard=st.sampled_from([None, True, False]),
        low=st.one_of(st.none(), st.integers(0, 500)),
        clear=RARE,
        pct=st.one_of(st.none(), mostly(st.integers(1, 100), st.sampled_from([0, 101]))),
        keyed=st.booleans(),
    )
    def configure_pool(self, pool_i, hard, low, clear, pct, keyed):
        key = POOLS[pool_i]
        reply, _ = self.run(
            ConfigurePool(
                currency_id=key[0], resource_id=key[1], hard_limit=hard,
                low_balance_units=low, clear_low_balance=clear, usage_low_percent=pct,
                idempotency_key=self.key_for(keyed),
            )
        )
        if not isinstance(reply, Refused) and hard is False:
            self.ever_soft.add(key)

    @rule(delta=st.sampled_from([1, 7, 100, 999, 1_000, 2_500, 5_000, 12_000, 30_000]))
    def advance_time(self, delta):
        self.now += delta
        reply, fx = self.run(Tick())
        assert isinstance(reply, TickReply)
        assert reply.next_due is None or reply.next_due > self.now
        assert all(e.timestamp <= self.now for e in fx.entries)
        # Reads change nothing.
        before = fingerprint_state(self.state)
        reply, fx = self.run(GetBalances())
        assert not fx and fingerprint_state(self.state) == before
        assert {(b.currency_id, b.resource_id): b.current_balance for b in reply.balances} == {
            k: p.balance for k, p in self.state.pools.items()
        }

    @precondition(lambda self: bool(self.keys))
    @rule(pick=st.integers(0, 1_000), how=st.sampled_from(["same", "same", "body", "type"]))
    def replay_key(self, pick, how):
        """Replay a remembered key, possibly long after its dates (expiry, TTL) passed:
        checks against `now` come after the idempotency check, so a same-body replay still
        gets its original reply, and a different body (or command) is refused as a reused
        key."""
        keys = list(self.keys)
        key = keys[pick % len(keys)]
        original, original_reply = self.keys[key]
        same = how == "same"
        if how == "type":
            cmd = (
                VoidGrant(grant_id="g-any", idempotency_key=key)
                if isinstance(original, Consume)
                else Consume(currency_id="cred", amount=1, idempotency_key=key)
            )
        elif same:
            # A retry carries freshly generated ids; they are not part of the body.
            if isinstance(original, CreateGrant):
                cmd = _replace(original, grant_id=self.fresh("g"))
            elif isinstance(original, Reserve):
                cmd = _replace(original, reservation_id=self.fresh("r"))
            else:
                cmd = original
        else:
            cmd = _different_body(original)
        assert cmd.idempotency_key == key
        before = fingerprint_state(self.state)
        n_entries = len(self.entries)
        reply, fx = self.run(cmd)
        if same:
            assert reply == original_reply, (reply, original_reply)
            assert not fx.entries and not fx.events and not fx
            assert len(self.entries) == n_entries
            assert fingerprint_state(self.state) == before
        else:
            assert isinstance(reply, Refused) and reply.code == "IDEMPOTENCY_KEY_REUSED", reply

    @rule(age=st.sampled_from([0, 1, 1_000, 10_000]), limit=st.integers(1, 5))
    def purge_old(self, age, limit):
        before_rows = reservations_by_id(self.state)
        balances = totals_by_key(self.state)
        removed = purge(self.state, self.now - age, limit)
        assert 0 <= removed <= limit
        for rid, row in before_rows.items():
            if rid not in self.state.reservations:
                assert row.status.value != "ACTIVE"
                self.archived[rid] = row
        for key in list(self.keys):
            if key not in self.state.idempotency:
                del self.keys[key]
        assert totals_by_key(self.state) == balances

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def pools_add_up(self):
        sums = defaultdict(int)
        for e in self.entries:
            sums[(e.currency_id, e.resource_id)] += e.amount
        for key, p in self.state.pools.items():
            assert p.balance == p.granted - p.consumed - p.expired - p.voided - p.reserved
            check_pool(self.state, p)
            assert p.balance == sums.get(key, 0), (key, p.balance, sums.get(key, 0))
        assert set(sums) <= set(self.state.pools)

    @invariant()
    def no_grant_below_zero(self):
        for g in self.state.grants.values():
            if g.grant_type is not GrantType.OVERDRAFT:
                assert g.available >= 0 and g.held >= 0 and g.consumed >= 0, g
                assert g.expired >= 0 and g.voided >= 0, g
            else:
                assert g.available <= 0 and g.held == 0 and g.consumed >= 0, g

    @invariant()
    def hard_pools_never_negative(self):
        for key, p in self.state.pools.items():
            if key not in self.ever_soft:
                assert p.hard_limit
                assert p.balance >= 0, (key, p.balance)
                assert p.overdraft is None or p.overdraft.consumed == 0

    @invariant()
    def sequences_gapless(self):
        assert [e.seq for e in self.entries] == list(range(1, len(self.entries) + 1))
        assert [e.seq for e in self.events] == list(range(1, len(self.events) + 1))
        assert self.state.ledger_seq == len(self.entries)
        assert self.state.event_seq == len(self.events)
        ops = [e.op_seq for e in self.entries]
        assert ops == sorted(ops) and all(o <= self.state.op_seq for o in ops)

    @invariant()
    def rebuild_from_ledger(self):
        c, grows, rrows, prows = rows_of(self.state)
        rrows = rrows + list(self.archived.values())
        rebuilt = rebuild(c, grows, rrows, prows, self.entries, records(self.state.idempotency))
        assert grants_by_id(rebuilt) == grants_by_id(self.state)
        live_res = reservations_by_id(self.state)
        rebuilt_res = reservations_by_id(rebuilt)
        assert {k: rebuilt_res[k] for k in live_res} == live_res
        assert {k: rebuilt_res[k] for k in self.archived} == self.archived
        assert totals_by_key(rebuilt) == totals_by_key(self.state)
        assert rebuilt.ledger_seq == self.state.ledger_seq
        for p in rebuilt.pools.values():
            check_pool(rebuilt, p)

    @invariant()
    def restore_from_rows(self):
        r = restored(self.state)
        assert grants_by_id(r) == grants_by_id(self.state)
        assert reservations_by_id(r) == reservations_by_id(self.state)
        assert totals_by_key(r) == totals_by_key(self.state)
        assert [pool_row(p) for p in r.pools.values()] == [
            pool_row(p) for p in self.state.pools.values()
        ]
        assert customer_row(r) == customer_row(self.state)
        assert r.idempotency == self.state.idempotency
        # Threshold flags are derived on restore; they must equal the live ones.
        assert flags(r) == flags(self.state)
        for p in r.pools.values():
            check_pool(r, p)


def _replace(cmd, **changes):
    return msgspec.structs.replace(cmd, **changes)


def _different_body(cmd):
    """The same key with a valid body that differs from the original."""
    if isinstance(cmd, (CreateGrant, Consume, Reserve)):
        return _replace(cmd, amount=cmd.amount + 1 if cmd.amount < 400 else cmd.amount - 1)
    if isinstance(cmd, Release):
        return _replace(cmd, consumed_amount=cmd.consumed_amount + 1)
    if isinstance(cmd, (VoidGrant, ConfirmPayment)):
        return _replace(cmd, grant_id=cmd.grant_id + "-other")
    if isinstance(cmd, ConfigurePool):
        return _replace(cmd, usage_low_percent=50 if cmd.usage_low_percent != 50 else 60)
    raise AssertionError(cmd)


CoreMachine.TestCase.settings = SETTINGS
TestCoreMachine = CoreMachine.TestCase


# ---------------------------------------------------------------------------------------
# Model-based auditor: an independent model of hard-limited pools


_KIND_ACTIVATE, _KIND_RESERVATION, _KIND_EXPIRE = 0, 1, 2


class _MGrant:
    def __init__(self, gid, pool, gtype, priority, amount, effective_at, expire_at, created_at, n):
        self.id = gid
        self.pool = pool
        self.amount = amount
        self.effective_at = effective_at
        self.expire_at = expire_at
        self.status = "active" if effective_at <= created_at else "scheduled"
        self.available = amount if self.status == "active" else 0
        free = gtype in (GrantType.PROMOTIONAL, GrantType.RECURRING)
        # Consumption order: priority, soonest expiry, free before paid, oldest first.
        self.order = (
            priority,
            math.inf if expire_at is None else expire_at,
            0 if free else 1,
            effective_at,
            created_at,
            n,
        )


class AuditorMachine(RuleBasedStateMachine):
    """Predicts acceptance (amount <= balance under the hard limit), the consumption
    breakdown, and every grant's remaining amount, and compares with the engine."""

    def __init__(self) -> None:
        super().__init__()
        self.state = CustomerState("audited")
        self.now = T0
        self.n = 0
        self.grants: dict[str, _MGrant] = {}
        # reservation id -> (pool, [(grant id, held)], expires_at, active)
        self.reservations: dict[str, list] = {}

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def do(self, cmd):
        return apply(self.state, cmd, self.now, Effects())

    # -- the model -------------------------------------------------------------------------

    def balance(self, pool) -> int:
        return sum(g.available for g in self.grants.values() if g.pool == pool)

    def ordered(self, pool) -> list[_MGrant]:
        return sorted(
            (g for g in self.grants.values()
             if g.pool == pool and g.status == "active" and g.available > 0),
            key=lambda g: g.order,
        )

    def take(self, pool, amount) -> list[tuple[str, int]]:
        taken = []
        for g in self.ordered(pool):
            if not amount:
                break
            x = min(g.available, amount)
            g.available -= x
            amount -= x
            taken.append((g.id, x))
        assert amount == 0
        return taken

    def settle(self, rid, consumed) -> None:
        r = self.reservations[rid]
        rest = consumed
        for gid, held in r[1]:
            g = self.grants[gid]
            x = min(held, rest)
            rest -= x
            if g.status == "active":
                g.available += held - x
        r[3] = False

    def model_advance(self, now) -> None:
        due = []
        for g in self.grants.values():
            if g.status == "scheduled" and g.effective_at <= now:
                due.append((g.effective_at, _KIND_ACTIVATE, g.id))
            if g.status in ("active", "scheduled") and g.expire_at is not None and g.expire_at <= now:
                due.append((g.expire_at, _KIND_EXPIRE, g.id))
        for rid, r in self.reservations.items():
            if r[3] and r[2] <= now:
                due.append((r[2], _KIND_RESERVATION, rid))
        for _, kind, ident in sorted(due):
            if kind == _KIND_ACTIVATE:
                g = self.grants[ident]
                g.status = "active"
                g.available = g.amount
            elif kind == _KIND_RESERVATION:
                self.settle(ident, 0)
            else:
                g = self.grants[ident]
                g.status = "expired"
                g.available = 0

    # -- rules -----------------------------------------------------------------------------

    @rule(
        pool_i=st.integers(0, 2),
        gtype=st.sampled_from(GRANTABLE),
        amount=st.integers(1, 300),
        priority=st.sampled_from([0, 10, 50, 50, 100]),
        expire_off=st.one_of(st.none(), st.integers(1, 10_000)),
        effective_off=st.one_of(st.none(), st.integers(1, 5_000)),
    )
    def grant(self, pool_i, gtype, amount, priority, expire_off, effective_off):
        pool = POOLS[pool_i]
        gid = self.fresh("g")
        effective_at = self.now if effective_off is None else self.now + effective_off
        expire_at = None if expire_off is None else effective_at + expire_off
        reply = self.do(
            CreateGrant(
                grant_id=gid, currency_id=pool[0], resource_id=pool[1], amount=amount,
                grant_type=gtype, display_name=gid, priority=priority,
                effective_at=None if effective_off is None else effective_at,
                expire_at=expire_at,
            )
        )
        assert not isinstance(reply, Refused), reply
        self.grants[gid] = _MGrant(
            gid, pool, gtype, priority, amount, effective_at, expire_at, self.now, self.n
        )

    @rule(pool_i=st.integers(0, 2), amount=st.integers(1, 600), exact=st.booleans())
    def consume(self, pool_i, amount, exact):
        pool = POOLS[pool_i]
        balance = self.balance(pool)
        if exact:
            amount = max(balance, 1)
        reply = self.do(Consume(currency_id=pool[0], resource_id=pool[1], amount=amount))
        predicted = amount <= balance
        assert isinstance(reply, ConsumeReply) == predicted, (amount, balance, reply)
        if predicted:
            expected = self.take(pool, amount)
            got = [(gid, x) for gid, x in reply.breakdown if x]
            assert got == expected, (got, expected)
            assert reply.balance.current_balance == balance - amount
        else:
            assert reply.code in ("INSUFFICIENT_CREDITS",), reply

    @rule(pick=st.integers(0, 1_000))
    def void(self, pick):
        if not self.grants:
            return
        ids = list(self.grants)
        g = self.grants[ids[pick % len(ids)]]
        reply = self.do(VoidGrant(grant_id=g.id))
        if g.status in ("expired", "voided"):
            assert isinstance(reply, Refused)
        else:
            assert not isinstance(reply, Refused), reply
            g.status = "voided"
            g.available = 0

    @rule(pool_i=st.integers(0, 2), amount=st.integers(1, 400), ttl=st.integers(1, 8_000))
    def reserve(self, pool_i, amount, ttl):
        pool = POOLS[pool_i]
        rid = self.fresh("r")
        balance = self.balance(pool)
        reply = self.do(
            Reserve(reservation_id=rid, currency_id=pool[0], resource_id=pool[1],
                    amount=amount, expires_at=self.now + ttl)
        )
        assert (not isinstance(reply, Refused)) == (amount <= balance), (amount, balance, reply)
        if amount <= balance:
            holds = self.take(pool, amount)
            self.reservations[rid] = [pool, holds, self.now + ttl, True]
            assert list(self.state.reservations[rid].holds.items()) == holds

    @rule(pick=st.integers(0, 1_000), percent=st.integers(0, 100))
    def release(self, pick, percent):
        if not self.reservations:
            return
        ids = list(self.reservations)
        rid = ids[pick % len(ids)]
        r = self.reservations[rid]
        amount = sum(h for _, h in r[1])
        consumed = amount * percent // 100
        reply = self.do(Release(reservation_id=rid, consumed_amount=consumed))
        assert isinstance(reply, Refused) != r[3], reply
        if r[3]:
            self.settle(rid, consumed)

    @rule(delta=st.sampled_from([1, 500, 1_000, 3_000, 9_000]))
    def advance(self, delta):
        self.now += delta
        self.model_advance(self.now)
        self.do(Tick())

    @invariant()
    def engine_agrees_with_model(self):
        for pool in POOLS[:3]:
            p = self.state.pools.get(pool)
            balance = 0 if p is None else p.balance
            assert balance == self.balance(pool), (pool, balance, self.balance(pool))
            assert balance >= 0
        for gid, m in self.grants.items():
            g = self.state.grants[gid]
            assert g.available == m.available, (gid, g, m.available)
            assert g.status.value.lower() == m.status or (
                m.status == "scheduled" and g.status is GrantStatus.SCHEDULED
            ), (gid, g.status, m.status)


AuditorMachine.TestCase.settings = SETTINGS
TestAuditor = AuditorMachine.TestCase
