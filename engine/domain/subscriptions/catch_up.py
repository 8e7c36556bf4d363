"""Subscriptions: what a customer bought, kept up to date with time.

A subscription is a document (table `subscriptions`) pointing at one published version of
a plan and of each add-on, so republishing a plan never changes what existing subscribers
have. Its status, billing period and recurring credits follow from its timeline
(`engine.billing.lifecycle`) and the clock:

- **Catch-up.** Before anything reads or changes a subscription, `_catch_up` brings it to
  `now`: scheduled updates whose time has come are applied, the status moves (trial end,
  scheduled cancellation), and the recurring credits of the window holding `now` are
  granted. A background scheduler does the same for every subscription whose `due_at` has
  passed, so credits land on time even when nobody asks (and `PUT /api/v1/test-clock`
  runs it before answering).
- **Recurring credits exactly once.** Each CREDIT entitlement (of the plan, or of an add-on
  times its quantity) is granted per window of its cadence as a RECURRING grant that
  expires at the window's end. The grant's id and idempotency key are derived from
  (subscription, source, currency, window start, n), so a retry after a crash between the
  grant and the document write replays the same grant instead of adding one; the document
  records what each window got. Windows missed entirely (the server was down past their
  end) are not granted late: their credits would be expired on arrival.
- **Changes.** An immediate update that raises a credit amount tops the current window up
  to the new amount; a lower amount takes effect from the next window (credits granted
  stay). An update with `scheduleStrategy: END_OF_BILLING_PERIOD` waits in `futureUpdates`
  until the period ends. A new subscription to a product that does not allow several
  replaces the customer's running one on that product (cancelReason
  UPGRADE_OR_DOWNGRADE, its unused recurring credits voided).
- **Cancellation.** IMMEDIATE ends it now; END_OF_BILLING_PERIOD and SPECIFIC_DATE end it
  then (the last credit window is cut there). `cancellationAction: REVOKE_ENTITLEMENTS`
  also voids the recurring credits left in the current window; DEFAULT leaves them to
  expire at the window's end.

One writer per customer: changes to a customer's subscriptions are serialized by a lock
per (environment, customer), so two requests never catch the same subscription up twice.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from weakref import WeakValueDictionary

import anyio
import anyio.lowlevel
import msgspec
import structlog
from msgspec import UNSET

from engine.billing.lifecycle import (
    billing_window,
    credit_window,
    next_change,
    status_at,
)
from engine.core.commands import CreateGrant, GrantReply, Refused, SetGrantExpiry, VoidGrant
from engine.core.model import GrantType
from engine.domain import packages
from engine.domain.context import Domain, engine_id, scoped_key
from engine.domain.errors import DomainError, bad_input
from engine.domain.subscriptions.changes import apply_changes, resolve
from engine.domain.subscriptions.document import (
    RUNNING,
    CreditWindow,
    Subscription,
    decode,
    encode,
    timeline_of,
)
from engine.domain.subscriptions.usage_windows import settle_usage
from engine.domain.values import units_in as amount_in

__all__ = [
    "RUNNING",
    "Scheduler",
    "active_subscriptions",
    "catch_up",
    "catch_up_all_due",
    "catch_up_due",
    "copy_of",
    "credit_sources",
    "customer_subscriptions",
    "id_for_key",
    "lock_of",
    "migrate_all",
    "provision_lock",
    "require_subscription",
    "save",
    "subscription_doc",
    "timeline_of",
    "trial_eligible",
    "void_current_credits",
]

log = structlog.get_logger("creditd.subscriptions")
_TABLE = "subscriptions"
# Scheduler batch: at most this many due subscriptions per step (the rest wait a step),
# caught up for at most this many customers at a time.
DUE_BATCH_MAX = 500
DUE_CONCURRENCY = 32
# The scheduler looks again at least this often (a due_at written by another path is
# picked up within this time even without a wake-up).
SCHEDULER_POLL_S = 30.0
# After a failed step (the database away), the scheduler waits this long (wall time).
SCHEDULER_RETRY_S = 5.0

# Per (purpose, environment, customer); an entry goes when no one holds or waits for it.
_locks: WeakValueDictionary[tuple[str, str, str], anyio.Lock] = WeakValueDictionary()


def _lock(purpose: str, env: str, customer_id: str) -> anyio.Lock:
    key = (purpose, env, customer_id)
    lock = _locks.get(key)
    if lock is None:
        lock = _locks[key] = anyio.Lock()
    return lock


def lock_of(env: str, customer_id: str) -> anyio.Lock:
    """Serializes the changes to a customer's subscriptions (catch-ups included)."""
    return _lock("catch-up", env, customer_id)


def new_id(plan_id: str) -> str:
    return f"subscription-{plan_id}-{secrets.token_hex(6)}"


def id_for_key(plan_id: str, customer_id: str, key: str) -> str:
    """The id of a subscription provisioned with an idempotency key: the same for a retry."""
    digest = hashlib.blake2b(f"{customer_id}\x00{key}".encode(), digest_size=6).hexdigest()
    return f"subscription-{plan_id}-{digest}"


def promotions_lock(env: str, customer_id: str) -> anyio.Lock:
    """Serializes grants and revocations of a customer's promotional entitlements (each
    reads the promotion it replaces or ends, settles its usage, then writes)."""
    return _lock("promotions", env, customer_id)


def provision_lock(env: str, customer_id: str) -> anyio.Lock:
    """Serializes provisioning per customer (held around the catch-up lock, never inside
    it)."""
    return _lock("provision", env, customer_id)


async def credit_sources(d: Domain, env: str, doc: Subscription
                         ) -> list[tuple[str, str, int, str, str]]:
    """The subscription's recurring credits: (source key, currency, units per window,
    cadence, display name) for the plan's CREDIT entitlements and each add-on's times its
    quantity."""
    out: list[tuple[str, str, int, str, str]] = []
    plan = await packages.published(d.documents, env, "plan", doc.plan_id, doc.plan_version)
    held = [("plan", plan, 1)]
    for addon in doc.addons:
        held.append((f"addon:{addon.id}",
                     await packages.published(d.documents, env, "addon", addon.id,
                                              addon.version),
                     addon.quantity))
    for source, package, quantity in held:
        if package is None:
            continue
        for e in package.entitlements:
            if e.type != "CREDIT" or e.amount in (None, "0"):
                continue
            units = amount_in(e.amount, "amount", allow_zero=True) * quantity
            if units > 0:
                out.append((source, e.id, units, e.cadence or "MONTH",
                            package.display_name or package.id))
    return out


def _grant_id(doc: Subscription, source: str, currency: str, window_start: int,
              n: int) -> str:
    digest = hashlib.blake2b(f"{doc.id}\x00{source}\x00{currency}".encode(),
                             digest_size=10).hexdigest()
    return f"subscription-{digest}-{window_start}-{n}"


async def _grant_window(d: Domain, env: str, doc: Subscription, source: str,
                        currency: str, units: int, cadence: str, name: str, now: int) -> bool:
    """Grant what the current window of this source still lacks; True if anything changed
    in the document."""
    window = credit_window(timeline_of(doc), cadence, now)
    if window is None:
        return False
    changed = False
    start, end = window
    key = f"{source}|{currency}"
    ledger = doc.credits
    got = ledger.get(key)
    if got is None or got.window != start:
        got = CreditWindow(window=start, end=end, units=0, ids=[])
    elif end > got.end:
        # The window grew (a trial extended): its credits last until the new end. (A window
        # cut short by a cancellation keeps the expiry it was granted with.)
        for grant_id in got.ids:
            await d.runtime.submit(engine_id(env, doc.customer_id),
                                   SetGrantExpiry(grant_id=grant_id, expire_at=end))
        got = CreditWindow(window=got.window, end=end, units=got.units, ids=list(got.ids))
        ledger[key] = got
        changed = True
    if got.units >= units:
        if ledger.get(key) is not got:
            ledger[key] = got
        return changed
    grant_id = _grant_id(doc, source, currency, start, len(got.ids))
    reply = await d.runtime.submit(engine_id(env, doc.customer_id), CreateGrant(
        grant_id=grant_id, currency_id=currency, amount=units - got.units,
        grant_type=GrantType.RECURRING, display_name=f"{name} credits",
        resource_id=doc.resource_id, expire_at=end,
        metadata={"subscriptionId": doc.id, "source": source},
        idempotency_key=scoped_key("subscription", grant_id)))
    if isinstance(reply, Refused):
        # The catalog validated the currency; a refusal here is a bug or a race with an
        # archived currency: log it and try again at the next catch-up.
        log.warning("recurring credits refused", subscription=doc.id, currency=currency,
                    code=reply.code, message=reply.message)
        return changed
    assert isinstance(reply, GrantReply)
    ledger[key] = CreditWindow(window=start, end=end, units=units, ids=[*got.ids, grant_id])
    return True


async def void_current_credits(d: Domain, env: str, doc: Subscription) -> None:
    """Void what is left of the recurring credits granted for the current windows."""
    for got in doc.credits.values():
        for grant_id in got.ids:
            reply = await d.runtime.submit(
                engine_id(env, doc.customer_id),
                VoidGrant(grant_id=grant_id, idempotency_key=scoped_key("subscription-void",
                                                                         grant_id)))
            if isinstance(reply, Refused) and reply.code not in (
                    "GRANT_ALREADY_VOIDED", "GRANT_NOT_ACTIVE", "GRANT_EXPIRED"):
                log.info("recurring credits not voided", grant=grant_id, code=reply.code)
        got.ids = []


def _apply_fields(doc: Subscription, now: int) -> None:
    """Status and billing period from the timeline at `now`."""
    t = timeline_of(doc)
    status = status_at(t, now)
    doc.status = status
    doc.period_start, doc.period_end = billing_window(t, now)
    if status in ("CANCELED", "EXPIRED") and doc.cancel_reason is None:
        doc.cancel_reason = "TRIAL_ENDED" if status == "EXPIRED" else "ScheduledCancellation"


async def _run_scheduled(d: Domain, env: str, doc: Subscription, now: int,
                         pending: list[Subscription]) -> bool:
    changed = False
    for update in doc.scheduled:
        if update.status == "SCHEDULED" and update.at <= now:
            if update.at >= timeline_of(doc).stop:
                # The subscription ended first (or at that instant): nothing to change.
                update.status = "CANCELED"
            else:
                await apply_changes(d, env, doc, update.changes, update.at, pending=pending)
                update.status = "DONE"
            changed = True
    return changed


async def catch_up(d: Domain, env: str, doc: Subscription, *,
                   new: bool = False, batch: list[tuple[str, Subscription]] | None = None,
                   ) -> Subscription:
    """Bring one subscription to the clock's `now` (the caller holds its customer's lock)
    and save it if anything moved (`new`: insert it; `batch`: leave the write to the
    caller, who writes the batch in one transaction before releasing the lock)."""
    now = d.now_ms()
    if not new and doc.due_at is not UNSET and (doc.due_at is None or doc.due_at > now):
        return doc  # nothing has come due since it was last brought up to date
    doc = copy_of(doc)  # a private copy to change (the caller's may be shared)
    # The customer's subscriptions this step changed and has not written yet: what the
    # usage settled below reads in place of the stored ones.
    pending = [other for e, other in batch or () if e == env
               and other.customer_id == doc.customer_id and other.id != doc.id]
    changed = await _run_scheduled(d, env, doc, now, pending)
    before = (doc.status, doc.period_start)
    stop = timeline_of(doc).stop
    if doc.status in RUNNING and now >= stop:
        # Its terms ended by the clock (a date, the period's end, a trial): the usage they
        # counted is settled as it stood at the stop (usage_windows).
        await settle_usage(d, env, doc, stop, ending=True, pending=pending)
    _apply_fields(doc, now)
    changed |= before != (doc.status, doc.period_start)
    sources = await credit_sources(d, env, doc)
    if new:
        # Inserted before any grant: a grant always belongs to a stored subscription.
        doc.due_at = now
        await save(d, env, doc, new=True)
    if doc.status in RUNNING:
        for source, currency, units, cadence, name in sources:
            changed |= await _grant_window(d, env, doc, source, currency, units,
                                           cadence, name, now)
    due = _due(doc, now, [cadence for _s, _c, _u, cadence, _n in sources])
    changed |= due != doc.due_at
    doc.due_at = due
    if batch is not None and changed and not new:
        _stamp(d, doc)
        batch.append((env, doc))
    elif changed or new:
        await save(d, env, doc)
    return doc


def _due(doc: Subscription, now: int, cadences: list[str]) -> int | None:
    t = timeline_of(doc)
    candidates = [next_change(t, cadences, now)]
    candidates += [u.at for u in doc.scheduled if u.status == "SCHEDULED"]
    found = [c for c in candidates if c is not None]
    return min(found) if found else None


def _stamp(d: Domain, doc: Subscription, *, created: bool = False) -> None:
    """Mark `doc` changed (and created) now, by the process's clock."""
    now = d.documents.now_ms()
    if created:
        doc.created_at = now
    doc.updated_at = now


async def save(d: Domain, env: str, doc: Subscription, *, new: bool = False) -> None:
    _stamp(d, doc, created=new)
    if new:
        if not await d.documents.insert(_TABLE, env, encode(doc)):
            raise DomainError(409, "DuplicatedEntityNotAllowed",
                              f"subscription {doc.id!r} exists already", "id")
    else:
        await d.documents.replace(_TABLE, env, encode(doc))
    d.entitlements_changed(env, doc.customer_id)


async def customer_subscriptions(d: Domain, env: str, customer_id: str
                                 ) -> list[Subscription]:
    """Every subscription of the customer, caught up to now, oldest first."""
    async with lock_of(env, customer_id):  # read under the lock: nobody writes meanwhile
        return [await catch_up(d, env, decode(doc))
                for doc in await d.store.customer_subscriptions(env, customer_id)]


async def active_subscriptions(d: Domain, env: str, customer_id: str,
                               resource_id: str | None = None) -> list[Subscription]:
    """The customer's running subscriptions (ACTIVE or IN_TRIAL) at the clock's now, for
    `resource_id` (None: those without a resource)."""
    return [s for s in await customer_subscriptions(d, env, customer_id)
            if s.status in RUNNING and s.resource_id == resource_id]


async def _stored(d: Domain, env: str, ident: str) -> Subscription | None:
    found = await d.documents.get(_TABLE, env, ident)
    return None if found is None else decode(found)


async def subscription_doc(d: Domain, env: str, ident: str) -> Subscription | None:
    doc = await _stored(d, env, ident)
    if doc is None:
        return None
    async with lock_of(env, doc.customer_id):
        # Read again under the lock: another request may have caught it up meanwhile.
        fresh = await _stored(d, env, ident)
        assert fresh is not None  # subscriptions are never deleted
        return await catch_up(d, env, fresh)


async def trial_eligible(d: Domain, env: str, customer_id: str, product_id: str) -> bool:
    """One trial per customer and product: a customer who ever had a trial on one of the
    product's plans gets the plan's default trial no more."""
    return not any(s.trial_end is not None and s.product_id == product_id
                   for s in await customer_subscriptions(d, env, customer_id))


async def require_subscription(d: Domain, env: str, ident: str) -> Subscription:
    """The subscription, caught up, as a private copy the caller may change."""
    doc = await subscription_doc(d, env, ident)
    if doc is None:
        raise DomainError(404, "SubscriptionNotFound", f"subscription {ident!r} was not found",
                       "id")
    return copy_of(doc)


@asynccontextmanager
async def editing(d: Domain, env: str, ident: str) -> AsyncIterator[Subscription]:
    """The subscription, caught up, as a private copy to change — under its customer's lock,
    held until the block ends, so a change is read and written in one hold (two changes at
    once never write over each other). Write it back with `commit` inside the block."""
    found = await _stored(d, env, ident)
    if found is None:
        raise DomainError(404, "SubscriptionNotFound", f"subscription {ident!r} was not found",
                          "id")
    async with lock_of(env, found.customer_id):
        fresh = await _stored(d, env, ident)
        assert fresh is not None  # subscriptions are never deleted
        yield copy_of(await catch_up(d, env, fresh))


async def commit(d: Domain, env: str, doc: Subscription) -> Subscription:
    """Save a changed subscription and bring it up to now (status, period, credit top-ups);
    the caller holds its customer's lock (`editing`)."""
    doc.due_at = d.now_ms()
    await save(d, env, doc)
    return await catch_up(d, env, doc)


def copy_of(doc: Subscription) -> Subscription:
    """A deep copy to change."""
    return decode(msgspec.json.encode(doc))


async def catch_up_due(d: Domain, now: int,
                       limit: int = DUE_BATCH_MAX) -> tuple[int, list[Exception]]:
    """Catch up the subscriptions whose `due_at` has passed, at most `limit`: how many were
    brought up to date, and the failures (each logged; one subscription failing — the
    database away, a bug — does not hold back the others).

    Customers are caught up concurrently, up to DUE_CONCURRENCY at a time, so their grants
    share the engine's group commits; one customer's subscriptions go one after the other.
    The subscriptions' own writes are gathered and written in one transaction, and every
    customer's lock is held until then, so no request sees (or changes) a subscription
    between its catch-up and its write. If that write fails, the whole step counts as
    failed; the next one makes the same grants again, which the engine answers as replays."""
    # One step at a time: two steps holding customers' locks while they wait for their
    # own batch to be written could each wait for a lock the other holds.
    async with _step_lock(d):
        return await _catch_up_step(d, now, limit)


def _step_lock(d: Domain) -> anyio.Lock:
    return d.state.lock("subscription-step")


async def _catch_up_step(d: Domain, now: int, limit: int) -> tuple[int, list[Exception]]:
    rows = await d.store.due_subscriptions(now, limit)
    by_customer: dict[tuple[str, str], list[str]] = {}
    for env, ident, customer_id in rows:
        by_customer.setdefault((env, customer_id), []).append(ident)
    failures: list[Exception] = []
    batch: list[tuple[str, Subscription]] = []
    limiter = anyio.CapacityLimiter(DUE_CONCURRENCY)
    pending = len(by_customer)
    all_done, written = anyio.Event(), anyio.Event()

    async def customer(env: str, customer_id: str, idents: list[str]) -> None:
        nonlocal pending
        async with lock_of(env, customer_id):
            try:
                async with limiter:  # released before the wait below: others may start
                    for ident in idents:
                        try:
                            doc = await _stored(d, env, ident)
                            if doc is not None:
                                await catch_up(d, env, doc, batch=batch)
                        except Exception as exc:  # logged; retried at the next step
                            log.exception("subscription catch-up failed", subscription=ident)
                            failures.append(exc)
            finally:
                pending -= 1
                if pending == 0:
                    all_done.set()
            await written.wait()  # the lock is held until the batch is written

    async with anyio.create_task_group() as tasks:
        for (env, customer_id), idents in by_customer.items():
            tasks.start_soon(customer, env, customer_id, idents)
        if by_customer:
            await all_done.wait()
            try:
                await _write(d, batch, failures)
            finally:
                written.set()
    return len(rows) - len(failures), failures


async def _write(d: Domain, batch: list[tuple[str, Subscription]],
                 failures: list[Exception]) -> None:
    """The batch's writes in one transaction; if that fails, one by one, so a subscription
    that cannot be written does not hold back the others (its failure is recorded)."""

    if not batch:
        return
    try:
        await d.documents.replace_many(_TABLE, [(env, encode(doc)) for env, doc in batch])
        written = batch
    except Exception:
        log.warning("subscription batch write failed; writing one by one", count=len(batch))
        written = []
        for env, doc in batch:
            try:
                await d.documents.replace(_TABLE, env, encode(doc))
                written.append((env, doc))
            except Exception as exc:  # logged; caught up again at the next step
                log.exception("subscription write failed", subscription=doc.id)
                failures.append(exc)
    for env, doc in written:
        d.entitlements_changed(env, doc.customer_id)


async def catch_up_all_due(d: Domain, now: int) -> None:
    """Every subscription due at `now`, batch after batch, before returning (a read that
    filters on status, a move of the test clock); the first failure is raised, after the
    others were tried."""
    while True:
        done, failures = await catch_up_due(d, now)
        if failures:
            raise failures[0]
        if done < DUE_BATCH_MAX:
            return


async def migrate_all(d: Domain, env: str, kind: str, ident: str) -> int:
    """Publishing with migrationType ALL_CUSTOMERS: every running subscription on the
    package moves to its latest version now (credit amounts as in an immediate update).
    Returns how many moved."""
    if kind == "plan":
        rows = await d.store.running_subscriptions_on_plan(env, ident)
    else:
        # Add-ons are inside the documents: read the environment's running subscriptions.
        rows = [(doc["customerId"], doc["id"])
                for doc in await d.store.running_subscriptions(env)
                if any(a["id"] == ident for a in doc.get("addons") or ())]
    moved = 0
    for customer_id, sub_id in rows:
        async with lock_of(env, customer_id):
            doc = await _stored(d, env, sub_id)
            if doc is None:
                continue
            doc = await catch_up(d, env, doc)
            if doc.status not in (*RUNNING, "NOT_STARTED"):
                continue
            doc = copy_of(doc)
            now = d.now_ms()
            try:
                changes = await resolve(d, env, doc, latest=True)
            except DomainError as exc:
                # The new version does not fit this subscription (an add-on no longer
                # compatible, a billing period no longer priced): it stays where it is.
                log.warning("subscription not migrated", subscription=sub_id,
                            field=exc.field, reason=str(exc))
                continue
            await apply_changes(d, env, doc, changes, now)
            doc.due_at = now
            await save(d, env, doc)
            await catch_up(d, env, doc)  # under the lock already held
            moved += 1
    return moved


class Scheduler:
    """Runs `catch_up_due` when the earliest due time passes (checked every
    SCHEDULER_POLL_S at least), and at once when woken (a clock move)."""

    def __init__(self, domain_of: Callable[[], Domain]) -> None:
        self._domain_of = domain_of
        self._wake = anyio.Event()
        # For `statistics()` (what /metrics shows); nothing here reads them back.
        self.steps = self.caught_up = self.failures = 0
        self.due = 0  # subscriptions the last step found due (at most DUE_BATCH_MAX)
        # The earliest due time the last pass read (None: none due, or no pass yet); a pass
        # that raised keeps the one before. A due time that stays in the past, because its
        # catch-up fails or the steps fall behind, makes the lag grow.
        self.next_due_ms: int | None = None

    def statistics(self, now_ms: int) -> dict[str, int | float]:
        """Steps run, subscriptions caught up and failed, due in the last step, and the
        lag: how long ago the earliest due time known passed (0 while none has)."""
        due_at = self.next_due_ms
        lag_s = max(0, now_ms - due_at) / 1000 if due_at is not None else 0.0
        return {"steps": self.steps, "caught_up": self.caught_up,
                "failures": self.failures, "due": self.due, "lag_s": lag_s}

    def wake(self) -> None:
        self._wake.set()

    async def catch_up(self, now: int) -> None:
        """Everything due at `now`, before returning (after the test clock moved)."""
        await catch_up_all_due(self._domain_of(), now)
        self.wake()

    async def run(self) -> None:
        while True:
            d = self._domain_of()
            failed = False
            try:
                while True:
                    done, failures = await catch_up_due(d, d.now_ms())
                    self.steps += 1
                    self.caught_up += done
                    self.failures += len(failures)
                    self.due = done + len(failures)
                    failed = bool(failures)
                    if failed or done < DUE_BATCH_MAX:
                        break
                    await anyio.lowlevel.checkpoint()
                due = await d.store.next_subscription_due()
                self.next_due_ms = due
            except Exception:  # noqa: BLE001 (the database may be away: try again later)
                log.exception("subscription scheduler step failed")
                failed, due = True, None
            if failed:
                # Something due could not be caught up: try again after a pause rather than
                # at once (its due time has passed, so it would be due again immediately).
                await anyio.sleep(SCHEDULER_RETRY_S)
                continue
            now = d.now_ms()
            deadline = now + int(SCHEDULER_POLL_S * 1000)
            if due is not None:
                deadline = min(deadline, max(due, now))
            await d.clock.wait_until(deadline, self._wake)
            self._wake = anyio.Event()


def bad_if(condition: bool, message: str, field: str) -> None:
    if condition:
        raise bad_input(message, field)
