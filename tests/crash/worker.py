"""A crash-test workload: `python tests/crash/worker.py <database-url> <seed>`.

Opens the store (durability sync) and a Runtime on it, then runs a concurrent workload
chosen by `seed` over a fixed set of customers until it is killed (test_kill9.py sends it
SIGKILL). Every command carries an idempotency key unique to this seed. One line is
printed and flushed per step, so the parent knows exactly what was asked and what was
acknowledged when the process died:

    SENT <key> <customer> <command as msgspec JSON>     before submitting
    ACK <key> <reply as msgspec JSON>                   once the reply is received
    ERR <key> <exception class>                         submit raised (nothing promised)

Which operation a task runs is derived from the seed; which grants and reservations it
can name depends on the interleaving (what earlier commands were acknowledged).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import anyio  # noqa: E402
import msgspec  # noqa: E402

from engine.core.commands import (  # noqa: E402
    Command,
    ConfigurePool,
    Consume,
    CreateGrant,
    GrantReply,
    Release,
    Reply,
    Reserve,
    ReserveReply,
    VoidGrant,
)
from engine.core.model import GrantStatus, GrantType  # noqa: E402
from engine.runtime import EngineError, Runtime, SystemClock  # noqa: E402
from persistence import open_store  # noqa: E402

CUSTOMERS = [f"cust-{i:02d}" for i in range(20)]
HARD = "usd"  # hard limit (the default): refused when the balance cannot cover
SOFT = "tok"  # soft limit: consumption past the balance goes to the overdraft
TASKS = 32
OPS_PER_TASK = 1_000_000  # effectively forever: the parent kills us

_encode = msgspec.json.Encoder(order="deterministic").encode


class Workload:
    def __init__(self, rt: Runtime, seed: int) -> None:
        self.rt = rt
        self.seed = seed
        self.clock = rt.clock
        # Per customer: grants this run created and may void; reservations it may release.
        self.grants: dict[str, list[str]] = {c: [] for c in CUSTOMERS}
        self.reservations: dict[str, list[tuple[str, int]]] = {c: [] for c in CUSTOMERS}

    async def send(self, customer: str, cmd: Command) -> Reply | None:
        key = cmd.idempotency_key
        assert key is not None and " " not in key
        sys.stdout.write(f"SENT {key} {customer} {_encode(cmd).decode()}\n")
        sys.stdout.flush()
        try:
            reply = await self.rt.submit(customer, cmd)
        except EngineError as exc:
            sys.stdout.write(f"ERR {key} {type(exc).__name__}\n")
            sys.stdout.flush()
            return None
        sys.stdout.write(f"ACK {key} {_encode(reply).decode()}\n")
        sys.stdout.flush()
        return reply

    def grant_command(self, rng: random.Random, key: str, currency: str, amount: int) -> CreateGrant:
        now = self.clock.now_ms()
        roll = rng.random()
        effective_at = expire_at = None
        if roll < 0.10:
            effective_at = now + rng.randint(200, 1500)  # activated later by a timer
        if rng.random() < 0.30:
            expire_at = (effective_at or now) + rng.randint(1_000, 15_000)
        return CreateGrant(
            idempotency_key=key, grant_id=f"g-{key}", currency_id=currency, amount=amount,
            grant_type=rng.choice([GrantType.PAID, GrantType.PROMOTIONAL, GrantType.RECURRING]),
            display_name=f"grant {key}", priority=rng.randint(0, 100),
            effective_at=effective_at, expire_at=expire_at,
        )

    async def setup(self, customer: str) -> None:
        rng = random.Random(f"{self.seed}-setup-{customer}")
        await self.send(customer, ConfigurePool(
            idempotency_key=f"s{self.seed}-cfg-{customer}", currency_id=SOFT, hard_limit=False))
        for currency in (HARD, SOFT):
            key = f"s{self.seed}-init-{customer}-{currency}"
            reply = await self.send(customer, CreateGrant(
                idempotency_key=key, grant_id=f"g-{key}", currency_id=currency,
                amount=rng.randint(50_000, 200_000), grant_type=GrantType.PAID,
                display_name="initial"))
            self._grant_acked(customer, reply)

    def _grant_acked(self, customer: str, reply: Reply | None) -> None:
        if isinstance(reply, GrantReply) and reply.grant.status in (
            GrantStatus.ACTIVE, GrantStatus.SCHEDULED
        ):
            self.grants[customer].append(reply.grant.id)

    async def task(self, t: int) -> None:
        rng = random.Random(f"{self.seed}-task-{t}")
        for i in range(OPS_PER_TASK):
            key = f"s{self.seed}-t{t}-{i}"
            customer = rng.choice(CUSTOMERS)
            currency = rng.choice((HARD, SOFT))
            roll = rng.random()
            if roll < 0.10:
                cmd = self.grant_command(rng, key, currency, rng.randint(2_000, 40_000))
                self._grant_acked(customer, await self.send(customer, cmd))
            elif roll < 0.62:
                await self.send(customer, Consume(
                    idempotency_key=key, currency_id=currency, amount=rng.randint(1, 3_000),
                    feature_id=rng.choice((None, "feat-a", "feat-b"))))
            elif roll < 0.78:
                rid = f"r-{key}"
                amount = rng.randint(100, 2_500)
                reply = await self.send(customer, Reserve(
                    idempotency_key=key, reservation_id=rid, currency_id=currency,
                    amount=amount, expires_at=self.clock.now_ms() + rng.randint(500, 8_000)))
                if isinstance(reply, ReserveReply):
                    self.reservations[customer].append((rid, amount))
            elif roll < 0.94:
                pending = self.reservations[customer]
                if not pending:
                    continue
                rid, amount = pending.pop(rng.randrange(len(pending)))
                await self.send(customer, Release(
                    idempotency_key=key, reservation_id=rid,
                    consumed_amount=rng.randint(0, amount),
                    feature_id=rng.choice((None, "feat-a"))))
            else:
                grants = self.grants[customer]
                if not grants:
                    continue
                # Each grant is voided by at most one command.
                gid = grants.pop(rng.randrange(len(grants)))
                await self.send(customer, VoidGrant(idempotency_key=key, grant_id=gid))


async def main(url: str, seed: int) -> None:
    async with open_store(url, durability="sync") as store:
        async with Runtime(store, SystemClock()) as rt:
            work = Workload(rt, seed)
            async with anyio.create_task_group() as tg:
                for customer in CUSTOMERS:
                    tg.start_soon(work.setup, customer)
            async with anyio.create_task_group() as tg:
                for t in range(TASKS):
                    tg.start_soon(work.task, t)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]), backend="asyncio")
