"""Crash recovery: kill -9 a busy engine, reopen its database, and check what survived.

For each backend (a SQLite file; a fresh PostgreSQL database) a worker process
(tests/crash/worker.py) runs a concurrent workload with durability "sync" and logs every
command before submitting it (SENT) and every reply once received (ACK). After a random
number of ACKs the worker gets SIGKILL; the test then opens the same database itself and
checks, over everything every round so far has sent:

1. an acknowledged command is applied exactly once: its idempotency key is stored with
   the reply the worker received, and its ledger rows are exactly one application (a
   consumption's CONSUMED rows match the reply's breakdown and amount; a grant has one
   CREDITS_GRANTED row if activated; a void one VOIDED row; a reserve/release its one set);
   an acknowledged refusal left no trace;
2. the stored rows are the ledger's projection: every pool's balance is the sum of its
   ledger amounts, `check_pool` holds, and `rebuild()` from definitions + ledger gives the
   same grant, reservation and pool values as `restore()` from the rows;
3. a command sent but not acknowledged is applied wholly or not at all (key, rows and
   ledger entries agree on which);
4. re-submitting acknowledged commands (same key and body) to a Runtime on the recovered
   store returns the original replies; retrying unacknowledged ones returns the remembered
   reply if the store has one (otherwise they apply now, and later rounds check them as
   acknowledged);
5. per customer the ledger seqs are 1..N (N = the customer row's ledger_seq) and the event
   seqs 1..event_seq; outbox ids are 1..M.

Rounds continue on the same database with a new worker seed each time, so recovery after a
crash is itself crashed and recovered repeatedly. CREDITD_CRASH_SEED picks the worker
seeds and kill points again (the interleaving is the scheduler's); CREDITD_CRASH_ROUNDS
the number of rounds per backend.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import msgspec
import pytest

from engine.core.commands import (
    AnyReply,
    Command,
    ConfigurePool,
    Consume,
    CreateGrant,
    Refused,
    Release,
    Reply,
    Reserve,
    VoidGrant,
)
from engine.core.effects import LedgerEntry
from engine.core.idempotency import request_digest
from engine.core.machine import check_pool
from engine.core.model import GrantStatus, GrantType, ReservationStatus
from engine.core.model import LedgerEventType as L
from engine.core.replay import grant_row, rebuild, reservation_row
from engine.runtime import Runtime, SystemClock
from persistence import open_store, sql
from persistence.codec import customer_from, grant_from, pool_from, reservation_from

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("worker.py")
REPO = Path(__file__).resolve().parents[2]
ROUNDS = int(os.environ.get("CREDITD_CRASH_ROUNDS", "8"))
ACKS_MIN, ACKS_MAX = 50, 400
WORKER_TIMEOUT_S = 60  # a worker that has not reached its ACK count by then is stuck
REPLAY_SAMPLE = 60
RETRY_SAMPLE = 10
PG_ADMIN_URL = os.environ.get("CREDITD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

_encode = msgspec.json.Encoder(order="deterministic").encode
_decode_command = msgspec.json.Decoder(Command).decode
_decode_reply = msgspec.json.Decoder(AnyReply).decode


@dataclass
class Sent:
    key: str
    customer: str
    command: Command
    round: int
    reply: Reply | None = None  # None: never acknowledged (killed first, or ERR)
    error: str | None = None


@dataclass
class History:
    sent: dict[str, Sent] = field(default_factory=dict)

    def by_customer(self) -> dict[str, list[Sent]]:
        out: dict[str, list[Sent]] = defaultdict(list)
        for s in self.sent.values():
            out[s.customer].append(s)
        return out

    def acked(self) -> Iterator[Sent]:
        return (s for s in self.sent.values() if s.reply is not None)


# -- driving the worker -----------------------------------------------------------------


def run_worker_until_killed(url: str, seed: int, acks_wanted: int, round_: int,
                            history: History, log_dir: Path) -> int:
    """Start a worker, SIGKILL it after `acks_wanted` ACK lines, record its log; returns
    how many ACKs it printed in all (the ones still in the pipe included)."""
    stderr_path = log_dir / f"worker-{seed}.stderr"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), url, str(seed)],
            stdout=subprocess.PIPE, stderr=stderr, cwd=REPO,
        )
    watchdog = threading.Timer(WORKER_TIMEOUT_S, proc.kill)
    watchdog.start()
    lines: list[bytes] = []
    acks = 0
    killed = False
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw)
            if raw.startswith(b"ACK "):
                acks += 1
                if acks >= acks_wanted:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed = True
                    break
        # Whatever the worker wrote before it died is still in the pipe: read it to EOF.
        lines += proc.stdout.read().splitlines(keepends=True)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    if not killed:
        pytest.fail(f"worker seed={seed} ended (rc={proc.returncode}) after {acks} ACKs, "
                    f"before {acks_wanted}:\n{stderr_path.read_text()[-3000:]}")
    assert proc.returncode == -signal.SIGKILL, proc.returncode

    acks = 0
    for raw in lines:
        if not raw.endswith(b"\n"):
            continue  # a line cut by the kill: its command was never submitted / acked
        kind, rest = raw.rstrip(b"\n").split(b" ", 1)
        if kind == b"SENT":
            key, customer, body = rest.split(b" ", 2)
            k = key.decode()
            assert k not in history.sent, f"worker reused key {k}"
            history.sent[k] = Sent(k, customer.decode(), _decode_command(body), round_)
        elif kind == b"ACK":
            key, body = rest.split(b" ", 1)
            history.sent[key.decode()].reply = _decode_reply(body)
            acks += 1
        elif kind == b"ERR":
            key, name = rest.split(b" ", 1)
            history.sent[key.decode()].error = name.decode()
        else:
            raise AssertionError(f"unexpected worker line {raw!r}")
    return acks


# -- reading a customer back ------------------------------------------------------------


async def _ledger(store, customer_id: str) -> list[LedgerEntry]:
    entries: list[LedgerEntry] = []
    while True:
        page = await store.ledger(customer_id, entries[-1].seq if entries else 0, 5000)
        entries += page
        if len(page) < 5000:
            return entries


async def _outbox(store) -> list:
    rows: list = []
    while True:
        page = await store.outbox_after(rows[-1][0] if rows else 0, 5000)
        rows += page
        if len(page) < 5000:
            return rows


class Problems(list):
    def add(self, message: str) -> None:
        self.append(message)


def _enc(value: object) -> bytes:
    return _encode(value)


def _one_op(entries: list[LedgerEntry]) -> bool:
    return len({e.op_seq for e in entries}) <= 1


async def verify(url: str, history: History, label: str) -> dict[str, int]:
    """Checks 1, 2, 3 and 5 on the database at `url` (no engine running); returns counts."""
    p = Problems()
    stats: dict = {"acked": 0, "unacked_applied": 0, "unacked_absent": 0, "entries": 0}
    kinds: Counter[str] = Counter()
    async with open_store(url) as store:
        customers = sorted({r[0] for r in await store._fetch("SELECT customer_id FROM customers")})
        sent_by_customer = history.by_customer()
        outbox = await _outbox(store)
        # 5. outbox ids gapless in commit order.
        ids = [row[0] for row in outbox]
        if ids != list(range(1, len(ids) + 1)):
            gaps = sorted(set(range(1, (ids[-1] if ids else 0) + 1)) - set(ids))[:10]
            p.add(f"outbox ids not gapless 1..{len(ids)}: missing {gaps}, "
                  f"duplicates {len(ids) - len(set(ids))}")
        events_by_customer: dict[str, list[int]] = defaultdict(list)
        for _id, cid, event in outbox:
            events_by_customer[cid].append(event.seq)

        for cid in customers:
            (crow,) = [customer_from(r) for r in await store._fetch(sql.SELECT_CUSTOMER, cid)]
            grant_rows = [grant_from(r) for r in await store._fetch(sql.SELECT_GRANTS, cid)]
            res_rows = [reservation_from(r)
                        for r in await store._fetch(sql.SELECT_RESERVATIONS, cid)]
            pool_rows = [pool_from(r) for r in await store._fetch(sql.SELECT_POOLS, cid)]
            state = await store.load(cid)
            entries = await _ledger(store, cid)
            stats["entries"] += len(entries)
            kinds.update(e.event_type.value.removeprefix("CREDITS_") for e in entries)

            # 5. ledger and event seqs gapless.
            seqs = [e.seq for e in entries]
            if seqs != list(range(1, crow.ledger_seq + 1)):
                p.add(f"{cid}: ledger seqs are not 1..{crow.ledger_seq}: "
                      f"{len(seqs)} rows, first gaps "
                      f"{sorted(set(range(1, crow.ledger_seq + 1)) - set(seqs))[:10]}")
            if sorted(events_by_customer[cid]) != list(range(1, crow.event_seq + 1)):
                p.add(f"{cid}: outbox event seqs are not 1..{crow.event_seq} "
                      f"({len(events_by_customer[cid])} events)")

            # 2. balances are the ledger's projection; pools check; rebuild == restore.
            by_pool: dict[tuple, int] = defaultdict(int)
            for e in entries:
                by_pool[(e.currency_id, e.resource_id)] += e.amount
            for key, pool in state.pools.items():
                if pool.balance != by_pool.get(key, 0):
                    p.add(f"{cid} pool {key}: balance {pool.balance} != ledger sum "
                          f"{by_pool.get(key, 0)}")
                try:
                    check_pool(state, pool)
                except AssertionError as exc:
                    p.add(f"{cid} pool {key}: check_pool failed: {exc!r}")
            for key in set(by_pool) - set(state.pools):
                p.add(f"{cid}: ledger rows for pool {key}, which is not stored")
            rebuilt = rebuild(crow, grant_rows, res_rows, pool_rows, entries)
            restored = {g.id: _enc(grant_row(g)) for g in state.grants.values()}
            derived = {g.id: _enc(grant_row(g)) for g in rebuilt.grants.values()}
            for gid in sorted(set(restored) | set(derived)):
                if restored.get(gid) != derived.get(gid):
                    p.add(f"{cid} grant {gid}: row {restored.get(gid)!r} != rebuilt from "
                          f"ledger {derived.get(gid)!r}")
            restored_r = {r.id: _enc(reservation_row(r)) for r in state.reservations.values()}
            derived_r = {r.id: _enc(reservation_row(r)) for r in rebuilt.reservations.values()}
            for rid in sorted(set(restored_r) | set(derived_r)):
                if restored_r.get(rid) != derived_r.get(rid):
                    p.add(f"{cid} reservation {rid}: row {restored_r.get(rid)!r} != rebuilt "
                          f"{derived_r.get(rid)!r}")
            for key, pool in state.pools.items():
                other = rebuilt.pools.get(key)
                got = (pool.balance, pool.reserved, pool.granted, pool.consumed, pool.expired,
                       pool.voided)
                want = None if other is None else (
                    other.balance, other.reserved, other.granted, other.consumed,
                    other.expired, other.voided)
                if got != want:
                    p.add(f"{cid} pool {key}: restored totals {got} != rebuilt {want}")

            # Ledger-wide: one application per key and per grant activation. Ledger rows
            # do not carry keys; a remembered key names the operation it made.
            sent = sent_by_customer.get(cid, [])
            records = {r.key: r for r in await store.lookup_keys(cid, [s.key for s in sent])}
            by_op: dict[int, list[LedgerEntry]] = defaultdict(list)
            by_grant: dict[str, list[LedgerEntry]] = defaultdict(list)
            by_res: dict[str, list[LedgerEntry]] = defaultdict(list)
            for e in entries:
                by_op[e.op_seq].append(e)
                by_grant[e.grant_id].append(e)
                if e.reservation_id is not None:
                    by_res[e.reservation_id].append(e)
            keyed = {key: by_op.get(r.op_seq, []) for key, r in records.items()
                     if r.op_seq is not None}
            ops_of_keys = Counter(r.op_seq for r in records.values() if r.op_seq is not None)
            for op, n in ops_of_keys.items():
                if n > 1:
                    p.add(f"{cid}: {n} keys name operation {op}")
            for e in entries:
                if e.event_type is L.CREDITS_CONSUMED and e.op_seq not in ops_of_keys:
                    p.add(f"{cid}: consumption row {e.seq} (operation {e.op_seq}) belongs to "
                          "no key sent (applied twice, or never asked for?)")
            grants = {g.id: g for g in grant_rows}
            for g in grant_rows:
                granted = [e for e in by_grant[g.id] if e.event_type is L.CREDITS_GRANTED]
                if g.grant_type is not GrantType.OVERDRAFT and len(granted) != int(g.activated):
                    p.add(f"{cid} grant {g.id}: {len(granted)} CREDITS_GRANTED rows, "
                          f"activated={g.activated}")
            reservations = {r.id: r for r in res_rows}
            pools = {(r.currency_id, r.resource_id): r for r in pool_rows}

            # 1 and 3: every command sent to this customer, acknowledged or not.
            for s in sent:
                rec = records.get(s.key)
                tag = f"{cid} {type(s.command).__name__} {s.key} (round {s.round}, " + (
                    "acked)" if s.reply is not None else "not acked)")
                if s.reply is not None:
                    stats["acked"] += 1
                    if isinstance(s.reply, Refused):
                        if rec is not None:
                            p.add(f"{tag}: refused ({s.reply.code}) yet its key is stored")
                        applied = False
                    elif rec is None:
                        p.add(f"{tag}: acknowledged but its key is not in the store (lost)")
                        applied = False
                    else:
                        applied = True
                        if _enc(rec.reply) != _enc(s.reply):
                            p.add(f"{tag}: stored reply {_enc(rec.reply)!r} != acknowledged "
                                  f"{_enc(s.reply)!r}")
                else:
                    applied = rec is not None
                    stats["unacked_applied" if applied else "unacked_absent"] += 1
                if rec is not None and rec.request != request_digest(s.command):
                    p.add(f"{tag}: stored request differs from the one sent")
                reply = rec.reply if rec is not None else None
                mine = keyed.get(s.key, [])
                cmd = s.command
                if isinstance(reply, Refused):
                    p.add(f"{tag}: a refusal was remembered")
                    continue
                if isinstance(cmd, Consume):
                    if not applied:
                        continue  # its key is not stored: no operation to look at
                    got = [(e.grant_id, -e.amount) for e in mine]
                    if got != [tuple(b) for b in reply.breakdown]:
                        p.add(f"{tag}: ledger rows {got} != reply breakdown {reply.breakdown}")
                    if any(e.event_type is not L.CREDITS_CONSUMED for e in mine):
                        p.add(f"{tag}: its operation has non-CONSUMED rows")
                    if -sum(e.amount for e in mine) != cmd.amount or reply.amount != cmd.amount:
                        p.add(f"{tag}: consumed {-sum(e.amount for e in mine)} in the ledger, "
                              f"requested {cmd.amount}, replied {reply.amount}")
                elif isinstance(cmd, CreateGrant):
                    g = grants.get(cmd.grant_id)
                    if not applied:
                        if g is not None or by_grant.get(cmd.grant_id):
                            p.add(f"{tag}: not applied, yet grant {cmd.grant_id} exists")
                        continue
                    if g is None:
                        p.add(f"{tag}: applied, but grant {cmd.grant_id} is not stored")
                        continue
                    granted = [e for e in by_grant[g.id] if e.event_type is L.CREDITS_GRANTED]
                    if reply.grant.status is GrantStatus.ACTIVE and (
                        len(granted) != 1 or granted[0].amount != cmd.amount
                    ):
                        p.add(f"{tag}: active grant has CREDITS_GRANTED rows "
                              f"{[e.amount for e in granted]}, amount {cmd.amount}")
                elif isinstance(cmd, VoidGrant):
                    g = grants.get(cmd.grant_id)
                    voids = [e for e in by_grant.get(cmd.grant_id, ())
                             if e.event_type is L.CREDITS_VOIDED and e.reservation_id is None]
                    if applied:
                        if g is None or g.status is not GrantStatus.VOIDED or len(voids) != 1:
                            p.add(f"{tag}: applied, but grant status "
                                  f"{None if g is None else g.status}, {len(voids)} VOIDED rows")
                    elif (g is not None and g.status is GrantStatus.VOIDED) or voids:
                        p.add(f"{tag}: not applied, yet the grant is voided")
                elif isinstance(cmd, Reserve):
                    r = reservations.get(cmd.reservation_id)
                    held = [e for e in by_res.get(cmd.reservation_id, ())
                            if e.event_type is L.CREDITS_RESERVED]
                    if not applied:
                        if r is not None or by_res.get(cmd.reservation_id):
                            p.add(f"{tag}: not applied, yet reservation {cmd.reservation_id} "
                                  "exists")
                        continue
                    if r is None or -sum(e.amount for e in held) != cmd.amount or not _one_op(held):
                        p.add(f"{tag}: applied, but reservation row {r is not None}, held "
                              f"{[e.amount for e in held]} for {cmd.amount}")
                elif isinstance(cmd, Release):
                    r = reservations.get(cmd.reservation_id)
                    settled = [e for e in by_res.get(cmd.reservation_id, ())
                               if e.event_type is L.CREDITS_RESERVATION_RELEASED]
                    if not applied:
                        if settled or (r is not None and r.status is ReservationStatus.RELEASED):
                            p.add(f"{tag}: not applied, yet the reservation was released")
                        continue
                    if r is None or r.status is not ReservationStatus.RELEASED or (
                        r.consumed_amount != cmd.consumed_amount
                    ):
                        p.add(f"{tag}: applied, but reservation is "
                              f"{None if r is None else (r.status, r.consumed_amount)}")
                    used = [e for e in mine if e.event_type is L.CREDITS_CONSUMED]
                    # Credits a release hands back repay an open overdraft in the same
                    # operation (ledger_ops.repay): a TRANSFER pair that names no reservation
                    # and nets to zero. Every other row must be this reservation's.
                    repaid = [e for e in mine if e.event_type in (
                        L.CREDITS_CONSUMPTION_TRANSFER_SOURCE,
                        L.CREDITS_CONSUMPTION_TRANSFER_TARGET)]
                    own = [e for e in mine if e not in repaid]
                    if -sum(e.amount for e in used) != cmd.consumed_amount or any(
                        e.reservation_id != cmd.reservation_id for e in own
                    ) or sum(e.amount for e in repaid) != 0 or any(
                        e.reservation_id is not None for e in repaid
                    ):
                        p.add(f"{tag}: its operation's ledger rows {mine} do not consume "
                              f"{cmd.consumed_amount} from the reservation")
                    if not settled or not _one_op(settled + used):
                        p.add(f"{tag}: released by {len({e.op_seq for e in settled})} "
                              "operations")
                elif isinstance(cmd, ConfigurePool):
                    pool = pools.get((cmd.currency_id, cmd.resource_id))
                    if applied and (pool is None or pool.hard_limit is not False):
                        p.add(f"{tag}: applied, but the pool is {pool}")
                else:
                    p.add(f"{tag}: unexpected command {cmd!r}")

        # Acknowledged commands to customers that have no row at all.
        for cid in set(sent_by_customer) - set(customers):
            for s in sent_by_customer[cid]:
                if s.reply is not None and not isinstance(s.reply, Refused):
                    p.add(f"{cid} {s.key}: acknowledged, but the customer is not stored")
    stats["ledger"] = dict(sorted(kinds.items()))
    assert not p, (f"{label}: {len(p)} problems after kill -9:\n  " + "\n  ".join(p[:40]))
    return stats


async def replay(url: str, history: History, rng: random.Random, label: str) -> int:
    """Check 4: re-submit acknowledged commands (same key, same body); each must get its
    original reply. Also retry some unacknowledged ones, as a client that got no answer
    would: one the store remembers must get the remembered reply; one it does not is
    applied now, and its reply becomes its acknowledgement for the later rounds."""
    acked = [s for s in history.acked() if not isinstance(s.reply, Refused)]
    unacked = [s for s in history.sent.values() if s.reply is None]
    sample = rng.sample(acked, min(REPLAY_SAMPLE, len(acked)))
    retries = rng.sample(unacked, min(RETRY_SAMPLE, len(unacked)))
    mismatches: list[str] = []
    async with open_store(url) as store:
        remembered = {}
        for s in retries:
            remembered.update((r.key, r) for r in await store.lookup_keys(s.customer, [s.key]))
        async with Runtime(store, SystemClock()) as rt:

            async def again(s: Sent) -> None:
                got = await rt.submit(s.customer, s.command)
                if _enc(got) != _enc(s.reply):
                    mismatches.append(f"{s.customer} {s.key}: replay got {_enc(got)!r}, "
                                      f"the acknowledged reply was {_enc(s.reply)!r}")

            async def retry(s: Sent) -> None:
                got = await rt.submit(s.customer, s.command)
                before = remembered.get(s.key)
                if before is not None and _enc(got) != _enc(before.reply):
                    mismatches.append(f"{s.customer} {s.key}: retry got {_enc(got)!r}, the "
                                      f"store remembered {_enc(before.reply)!r}")
                s.reply = got

            async with anyio.create_task_group() as tg:
                for s in sample:
                    tg.start_soon(again, s)
                for s in retries:
                    tg.start_soon(retry, s)
    assert not mismatches, f"{label}: replies differ:\n  " + "\n  ".join(mismatches[:20])
    return len(sample) + len(retries)


async def dead_sessions_gone(url: str) -> str | None:
    """PostgreSQL: wait until the killed worker's server sessions have ended.

    The server goes on reading what the worker had already sent before it died: a
    transaction whose COMMIT was in the socket buffer still commits, some milliseconds
    after the process is gone. Checking (or restarting an engine) before then reads a
    database that is still changing under it. Returns what was seen, if anything was.
    """
    if not url.startswith(("postgresql://", "postgres://")):
        return None  # SQLite: a dead process writes nothing more
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        seen = None
        with anyio.fail_after(30):
            while True:
                rows = await conn.fetch(
                    "SELECT state, left(query, 40) AS query FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
                if not rows:
                    return seen
                busy = [f"{r['state']}: {r['query']!r}" for r in rows if r["state"] != "idle"]
                if busy and seen is None:
                    seen = f"{len(rows)} sessions left, busy: {busy[:3]}"
                await anyio.sleep(0.005)  # polling the server: nothing to wait on instead
    finally:
        await conn.close()


def crash_rounds(url: str, log_dir: Path) -> None:
    base = int(os.environ.get("CREDITD_CRASH_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(base)
    history = History()
    summary = []
    in_flight_at_kill = 0
    for round_ in range(1, ROUNDS + 1):
        seed = base * 100 + round_
        label = f"{url.split(':')[0]} round {round_}/{ROUNDS} (CREDITD_CRASH_SEED={base})"
        wanted = rng.randint(ACKS_MIN, ACKS_MAX)
        acks = run_worker_until_killed(url, seed, wanted, round_, history, log_dir)
        in_flight_at_kill += sum(1 for s in history.sent.values()
                                 if s.round == round_ and s.reply is None)
        lingering = anyio.run(dead_sessions_gone, url, backend="asyncio")
        stats = anyio.run(verify, url, history, label, backend="asyncio")
        if lingering:
            stats["dead_worker_sessions"] = lingering
        replayed = anyio.run(replay, url, history, rng, label, backend="asyncio")
        summary.append((round_, wanted, acks, stats, replayed))
    # What the last replay's runtime committed (timers, if any) must also check out.
    final = anyio.run(verify, url, history, f"{url.split(':')[0]} after the last replay",
                      backend="asyncio")
    for round_, wanted, acks, stats, replayed in summary:
        print(f"round {round_}: killed after {wanted} ACKs ({acks} in the log), {stats}, "
              f"replayed {replayed}")
    print(f"final: {final}")
    assert in_flight_at_kill > 0, "no kill landed while commands were in flight"


# -- the backends -----------------------------------------------------------------------


def test_kill9_sqlite(tmp_path: Path) -> None:
    crash_rounds(f"sqlite:///{tmp_path / 'crash.db'}", tmp_path)


async def _pg_admin(statement: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"creditd_crash_{os.getpid()}_{random.SystemRandom().randrange(16**8):08x}"
    try:
        anyio.run(_pg_admin, f'CREATE DATABASE "{name}"', backend="asyncio")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required in CI: {exc!r}")
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc!r}")
    parts = urlsplit(PG_ADMIN_URL)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        anyio.run(_pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', backend="asyncio")


def test_kill9_postgres(postgres_url: str, tmp_path: Path) -> None:
    crash_rounds(postgres_url, tmp_path)
