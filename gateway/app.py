"""The Litestar application: lifespan (store + runtime), authentication, routes.

Request bodies are decoded by `gateway.wire.decode` (msgspec, Decimal amounts, errors that
name the field) and responses encoded by `ok()` (msgspec, Decimal as JSON numbers), so
amounts never pass through a binary float in either direction.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import structlog
from litestar import Litestar, Request, Response, get
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.params import FromQuery

from engine.runtime import Runtime
from engine.runtime.clock import ManualClock, SystemClock
from engine.runtime.recharge import RechargeExecutor, RecordingProvider, ScriptedProvider
from gateway import metrics, openapi
from gateway.admission import Admission
from gateway.auth import authenticate
from gateway.cluster.node import ClusterRuntime, Node
from gateway.config import Settings
from gateway.context import Services, services
from gateway.errors import ApiError, exception_handlers
from gateway.feed.hub import Hub
from gateway.feed.service import Feed, FeedOptions
from gateway.feed.tokens import Tokens, load_secret
from gateway.portal.access import RateLimiter
from gateway.wire import page_query
from persistence import default_database_url, open_store
from persistence.documents import Catalog
from webhooks import Options as WebhookOptions
from webhooks import RetryPolicy, Webhooks

__all__ = ["create_app", "tune_gc"]

log = structlog.get_logger("creditd.gateway")

def _echo_request_id(message: Any, scope: Any) -> None:
    """Every HTTP response says which request id its log lines carry (X-Request-ID)."""
    if message["type"] == "http.response.start":
        request_id = (scope.get("state") or {}).get("request_id")
        if request_id:
            message["headers"] = [*message.get("headers", []),
                                  (b"x-request-id", request_id.encode())]


def _before_send(*hooks: Callable[[Any, Any], None]) -> Any:
    """One before-send hook that calls `hooks` in turn: Litestar awaits each hook for each
    message sent, and three coroutines for each of a response's two messages were about
    1 % of the server's time under load."""

    async def before_send(message: Any, scope: Any) -> None:
        for hook in hooks:
            hook(message, scope)

    return before_send


@get("/health", include_in_schema=False)
async def health(request: Request, detail: FromQuery[bool] = False) -> Response:
    """200 while the process runs. With `detail=true` and an API key: the runtime's and the
    store's counters (resident customers, the memory estimate against its budget, keys in
    memory and forgotten, flushes, loads and key lookups with their time), what
    scripts/soak.py samples to see what changes over hours of load."""
    if not detail:
        return Response({"status": "ok"})
    key = request.headers.get("x-api-key")
    svc = services(request)
    if not key or svc.catalog.environment_of(key) is None:
        raise ApiError(401, "Unauthenticated", "detail needs a valid X-API-KEY", "X-API-KEY")
    body = {"status": "ok",
            "runtime": msgspec.to_builtins(svc.runtime.runtime_statistics()),
            "store": svc.store.statistics(), "gc": gc_statistics(),
            "admission": request.app.state.admission.statistics()}
    node = getattr(request.app.state, "cluster", None)
    if node is not None:  # which shards this process owns, at which epochs; forwards
        body["cluster"] = node.statistics()
    return Response(body)


@get("/ready", include_in_schema=False)
async def ready(request: Request) -> Response:
    try:
        await services(request).store.ping()
    except Exception as exc:  # any failure to reach the database means "not ready"
        return Response({"status": "unavailable", "reason": str(exc)}, status_code=503)
    return Response({"status": "ready"})


def _webhooks(store: Any, settings: Settings) -> Webhooks:
    options = WebhookOptions(
        allow_private=settings.webhooks_allow_private,
        timeout_s=settings.webhooks_timeout_ms / 1000,
        concurrency_max=settings.webhooks_concurrency_max,
        endpoint_concurrency_max=min(32, settings.webhooks_concurrency_max),
        retry=RetryPolicy(base_ms=settings.webhooks_retry_base_ms,
                          cap_ms=max(settings.webhooks_retry_cap_ms,
                                     settings.webhooks_retry_base_ms),
                          attempts_max=settings.webhooks_attempts_max))
    return Webhooks(store, options=options,
                    sender=Webhooks.make_sender(settings.webhooks_client, options))


def _clock(settings: Settings) -> Any:
    kind, _, start = settings.clock.partition(":")
    if kind != "manual":
        return SystemClock()
    from gateway.wire import parse_time  # noqa: PLC0415 (only for the manual clock)

    start_ms = parse_time(start, "CREDITD_CLOCK") if start else None
    return ManualClock(start_ms) if start_ms is not None else ManualClock(SystemClock().now_ms())


def _recharge_executor(settings: Settings, store: Any, clock: Any) -> RechargeExecutor:
    recording = RecordingProvider(store, clock.now_ms)
    provider: Any = recording
    if settings.recharge_provider != "record":
        provider = ScriptedProvider(settings.recharge_provider, inner=recording)
    return RechargeExecutor(provider, timeout_s=settings.recharge_timeout_s,
                            retry_base_s=settings.recharge_retry_base_s,
                            concurrency_max=settings.recharge_concurrency_max,
                            queue_max=settings.recharge_queue_max)


def _store_limits(settings: Settings, url: str | None) -> dict[str, Any]:
    """The store's limits from the settings (docs/operations.md, "Limits and overload")."""
    options: dict[str, Any] = {"durability": settings.durability,
                               "flush_rows_max": settings.flush_rows_max,
                               "backlog_rows_max": settings.backlog_rows_max,
                               "key_filter_bytes": settings.key_filter_mb << 20}
    url = url or default_database_url()
    if url.startswith("sqlite:"):
        options["cache_mb"] = settings.sqlite_cache_mb
    elif url.startswith(("postgresql:", "postgres:")):
        options["pool_max"] = settings.pg_pool_max
        options["pool_min"] = min(2, settings.pg_pool_max)
        options["command_timeout_s"] = settings.db_timeout_s
    return options


def _runtime_limits(settings: Settings) -> dict[str, Any]:
    """The runtime's limits from the settings (docs/operations.md)."""
    return {"memory_max_bytes": settings.memory_mb * 1024 * 1024,
            "resident_max": settings.resident_max, "mailbox_max": settings.mailbox_max,
            "pending_max": settings.pending_max, "batch_max": settings.batch_max,
            "workers_count": settings.workers,
            "passivate_after_ms": int(settings.passivate_after_s * 1000)}


def tune_gc() -> None:
    """Move everything built at start-up out of the cyclic collector's way, and let the
    youngest generation grow larger before a collection: requests allocate many short-lived
    objects, and with the default threshold (700) collections ran every few requests and
    showed up as latency spikes at high concurrency (scripts/bench_http.py p99). The
    collections are counted and timed per generation (`gc_statistics`, in
    /health?detail=true): a soak shows whether they grow with the heap."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    if _gc_timer not in gc.callbacks:
        gc.callbacks.append(_gc_timer)


_gc_counts = [0, 0, 0]
_gc_seconds = [0.0, 0.0, 0.0]
_gc_started = 0.0


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        generation = info["generation"]
        _gc_counts[generation] += 1
        _gc_seconds[generation] += time.perf_counter() - _gc_started


def gc_statistics() -> dict[str, list[int] | list[float]]:
    """Collections since start per generation (0, 1, 2) and the seconds they took."""
    return {"collections": list(_gc_counts), "seconds": [round(x, 3) for x in _gc_seconds]}


def _feed(settings: Settings, clock: Any, secret: str) -> Feed:
    options = FeedOptions(subscribers_max=settings.feed_subscribers_max,
                          customer_subscribers_max=settings.feed_customer_subscribers_max,
                          backlog_max=settings.feed_backlog_max,
                          replay_max=settings.feed_replay_max,
                          heartbeat_s=settings.feed_heartbeat_s)
    hub = Hub(subscribers_max=options.subscribers_max,
              customer_subscribers_max=options.customer_subscribers_max,
              backlog_max=options.backlog_max, now_ms=clock.now_ms)
    return Feed(hub, Tokens(secret), options)


def _node(settings: Settings, store: Any) -> Node | None:
    """The cluster node of a process on PostgreSQL (None: SQLite, memory, or
    CREDITD_CLUSTER=off), its leases set as the store's fence."""
    if settings.cluster == "off" or getattr(store, "dialect", "") != "postgresql":
        return None

    async def secret() -> str:
        import secrets  # noqa: PLC0415

        return await store.server_secret("cluster", secrets.token_urlsafe(32),
                                         int(time.time() * 1000))

    node = Node(secret_source=secret, host=settings.cluster_host, port=settings.cluster_port,
                advertise=settings.cluster_advertise, ttl_s=settings.lease_ttl_s,
                renew_s=settings.lease_renew_s)
    store.fence = node.leases
    return node


def _wake_webhooks(state: Any) -> Any:
    def wake(customer_id: str, effects: Any) -> None:
        webhooks = state.webhooks  # None on a cluster node that does not lead
        if webhooks is not None:
            webhooks.wake()

    return wake


async def _lead(app: Litestar, node: Node, store: Any, settings: Settings,
                stop: anyio.Event, done: anyio.Event) -> None:
    """The once-only jobs, while this node holds the leader's lease: webhooks (relay,
    dispatcher, purge; the endpoint API is forwarded here) and the subscription
    scheduler. Leadership lost: they stop, and another node starts them. `stop` (a
    graceful shutdown): they stop while the lease is still held — the dispatcher settles
    the deliveries in flight, so the next leader does not send them again — and `done`
    is set; the lease is given up after that (`Node.leave`)."""
    from engine.domain.subscriptions.catch_up import Scheduler  # noqa: PLC0415

    try:
        await _lead_while(app, node, store, settings, stop, Scheduler)
    finally:
        done.set()


async def _lead_while(app: Litestar, node: Node, store: Any, settings: Settings,
                      stop: anyio.Event, Scheduler: Any) -> None:  # noqa: N803
    leases = node.leases
    while not stop.is_set():
        while not leases.is_leader() and not stop.is_set():
            with anyio.move_on_after(leases.renew_s / 2):
                await leases.changed.wait()
        if stop.is_set():
            return
        log.info("leading the cluster: webhooks and the scheduler run here", node=node.node_id)
        try:
            # Webhooks are left normally, never cancelled from outside: leaving drains the
            # dispatcher (the deliveries in flight are answered and recorded), so the next
            # leader does not send them again. Only the scheduler is cancelled.
            async with _webhooks(store, settings) as webhooks:
                app.state.webhooks = webhooks
                scheduler = Scheduler(lambda: app.state.services.domain)
                app.state.scheduler = scheduler
                app.state.on_clock_moved.append(scheduler.catch_up)
                try:
                    async with anyio.create_task_group() as jobs:
                        jobs.start_soon(scheduler.run)
                        while leases.is_leader() and not stop.is_set():
                            with anyio.move_on_after(leases.renew_s / 2):
                                await leases.changed.wait()
                        jobs.cancel_scope.cancel()
                finally:
                    app.state.on_clock_moved.remove(scheduler.catch_up)
                    app.state.webhooks = None
                    app.state.scheduler = None
        except Exception as exc:  # noqa: BLE001 - the database away at start: lead again
            log.warning("leader jobs stopped", error=repr(exc))
            await anyio.sleep(leases.renew_s)
        log.info("no longer leading the cluster", node=node.node_id)


def _asgi_call(app: Litestar) -> Any:
    """Run an HTTP request a peer forwarded (the leader's endpoint API) through this app;
    returns [status, headers, body]."""

    async def call(method: str, path: str, query: bytes, headers: list[Any],
                   body: bytes) -> list[Any]:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path,
                 "raw_path": path.encode(), "query_string": query, "root_path": "",
                 "headers": [(bytes(k), bytes(v)) for k, v in headers],
                 "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0)}
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await anyio.sleep_forever()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status, out_headers, chunks = 500, [], []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, out_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                out_headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(scope, receive, send)  # type: ignore[arg-type]
        return [status, out_headers, b"".join(chunks)]

    return call


async def _leading(app: Litestar, node: Node) -> None:
    """Wait (a few seconds at most) until a leader's jobs are running, webhooks first."""
    with anyio.move_on_after(5):
        while node.leases.is_leader() and app.state.webhooks is None:
            await anyio.sleep(0.01)


_LEADER_PATHS = ("/api/v1/webhooks",)


def _leader_only(handler: Any, app: Litestar) -> Any:
    """On a cluster node that does not lead, send the webhook endpoint API to the leader
    (webhooks run there alone); everything else passes through."""

    def wrapped(scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        # Not a coroutine itself: for everything but the webhook endpoint API it hands back
        # the handler's own, so every request's chain of awaits is one level shorter.
        node = getattr(app.state, "cluster", None)
        if (scope["type"] != "http" or node is None
                or not scope["path"].startswith(_LEADER_PATHS)):
            return handler(scope, receive, send)
        return leader_only(node, scope, receive, send)

    async def leader_only(node: Any, scope: Any, receive: Any, send: Any) -> None:
        if app.state.webhooks is None and node.leases.is_leader():
            await _leading(app, node)  # leadership just taken: its jobs are starting
        if app.state.webhooks is not None:
            await handler(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            status, headers, out = await node.forward_http(
                scope["method"], scope["path"], scope.get("query_string", b""),
                list(scope.get("headers", [])), body)
        except Exception as exc:  # noqa: BLE001 - the leader unreachable: retryable
            status, headers = 503, [(b"content-type", b"application/json"),
                                    (b"retry-after", b"1")]
            out = msgspec.json.encode({"statusCode": 503, "code": "ServiceUnavailable",
                                       "message": f"the cluster's leader did not answer: {exc}"})
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return wrapped


def _chain(first: Any, second: Any) -> Any:
    """Two hooks of two arguments as one (commit hooks: customer and effects; notices:
    environment and customer or facts); either may be None."""
    if second is None:
        return first
    if first is None:
        return second

    def both(a: Any, b: Any) -> None:
        first(a, b)
        second(a, b)

    return both


def create_app(settings: Settings, *, runtime_options: dict[str, Any] | None = None,
               store: Any = None, server_process: bool = False) -> Litestar:
    """The application. `store` replaces the one `settings.database_url` names (tests
    inject stores that fail or stall on cue). With `server_process` (what `creditd serve`
    says), the garbage collector is tuned once started (`tune_gc`): a server's own process
    only."""
    from engine.domain.subscriptions.catch_up import Scheduler
    from gateway.graphql.edge import ROUTES as EDGE
    from gateway.graphql.route import ROUTES as GRAPHQL
    from gateway.portal.pages import ROUTES as PAGES
    from gateway.portal.pages import cors_headers
    from gateway.routes import ROUTES

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        nonlocal store
        if store is None:
            store = open_store(settings.database_url,
                               **_store_limits(settings, settings.database_url))
        # On PostgreSQL every process is a cluster node (one alone owns every shard);
        # the store's fence must be in place before it opens.
        node = _node(settings, store)
        app.state.cluster = node
        async with store:
            options = {**_runtime_limits(settings), **(runtime_options or {})}
            # The process's one clock: the runtime's, the catalog's stamps, the feed's tokens.
            clock = options.get("clock") or _clock(settings)
            options["clock"] = clock
            catalog = Catalog(store, clock=clock, docs_cached_max=settings.cache_entries_max)
            await catalog.load_keys()
            if node is not None:
                node.catalog = catalog
                catalog.on_changed = node.document_changed
            configured = [entry.rpartition(":") for entry in settings.api_keys]
            for env, _, key in configured:
                await catalog.add_key(key, env or "default")
            if configured:
                # CREDITD_API_KEYS is the whole set: a key taken out of it is revoked (a
                # key generated before keys were configured too).
                revoked = await catalog.keep_only([key for _, _, key in configured])
                if revoked:
                    log.info("revoked API keys no longer configured", count=revoked)
            if not catalog.has_keys():
                key = Catalog.new_key()
                await catalog.add_key(key, "default")
                # Printed once: only its hash is stored.
                print(f"creditd: generated an API key for environment 'default': {key}\n"
                      "creditd: it is stored hashed and will not be shown again.", flush=True)
            # Webhooks tail the outbox; the runtime's commit hook only wakes them, so
            # deliveries start within milliseconds of a commit (webhooks/relay.py). The
            # live feed gets the committed effects themselves from the same hook.
            app.state.feed = _feed(settings, clock, settings.token_secret
                                   or await load_secret(store, clock.now_ms()))
            # Auto-recharge payments run beside the engine, fed by the same hook.
            recharges = _recharge_executor(settings, store, clock)
            app.state.recharges = recharges
            # Called with the new time after PUT /api/v1/test-clock moved a manual clock.
            app.state.on_clock_moved = []
            hub = app.state.feed.hub
            app.state.webhooks = None
            app.state.scheduler = None
            async with contextlib.AsyncExitStack() as stack:
                if node is None:
                    app.state.webhooks = await stack.enter_async_context(
                        _webhooks(store, settings))
                options["on_committed"] = _chain(_chain(_chain(_chain(
                    options.get("on_committed"), _wake_webhooks(app.state)),
                    hub.publish), recharges.on_committed),
                    node.on_committed if node is not None else None)
                async with Runtime(store, **options) as engine, \
                        anyio.create_task_group() as tasks:
                    runtime: Any = engine
                    if node is not None:
                        # Commands go to their customer's owner (gateway/cluster/node.py).
                        runtime = ClusterRuntime(engine, node)
                        node.hub, hub.on_interest = hub, node.interest
                        node.domain = lambda: getattr(app.state, "services", None) and \
                            app.state.services.domain
                        node.webhooks = lambda: app.state.webhooks
                        node.http = _asgi_call(app)
                        node.recharges = recharges
                        await node.start(tasks, store, engine)
                    tasks.start_soon(recharges.run, runtime, store)
                    tasks.start_soon(hub.run_ticker, app.state.feed.options.heartbeat_s)
                    app.state.services = Services(
                        settings, store, runtime, catalog, clock,
                        on_entitlements_changed=_chain(hub.entitlements_changed,
                                                       node and node.entitlements_changed),
                        on_package_published=_chain(hub.package_published,
                                                    node and node.package_published))
                    if node is None:
                        # Renewals, trial ends and scheduled changes of subscriptions.
                        scheduler = Scheduler(lambda: app.state.services.domain)
                        tasks.start_soon(scheduler.run)
                        app.state.scheduler = scheduler  # its counters: /metrics
                        app.state.on_clock_moved.append(scheduler.catch_up)
                    else:
                        stop_leading, led = anyio.Event(), anyio.Event()
                        tasks.start_soon(_lead, app, node, store, settings, stop_leading,
                                         led)
                        await _leading(app, node)  # ready to serve the webhook API
                    log.info("creditd ready", database=settings.database_url or "default",
                             node=node.node_id if node is not None else None)
                    if server_process:
                        tune_gc()
                    try:
                        yield
                    finally:
                        if node is not None:
                            stop_leading.set()
                            with anyio.CancelScope(shield=True), anyio.move_on_after(15):
                                await led.wait()
                            await node.leave()
                        tasks.cancel_scope.cancel()

    measured = settings.metrics == "on"

    def _on_app_init(config: AppConfig) -> AppConfig:
        config.before_request = authenticate
        config.before_send = [*config.before_send, _before_send(
            _echo_request_id, cors_headers, *([metrics.note_sent] if measured else []))]
        return config

    app = Litestar(
        route_handlers=[health, ready, *ROUTES, *GRAPHQL, *EDGE, *PAGES,
                        *([metrics.scrape] if measured else [])],
        lifespan=[lifespan],
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        on_app_init=[_on_app_init],
        request_max_body_size=settings.body_bytes_max,
        # Every list's paging (`page: PageQuery` in its handler).
        dependencies={"page": Provide(page_query, sync_to_thread=False)},
        openapi_config=OpenAPIConfig(title="creditd", version="0.1.0", path="/schema",
                                     render_plugins=[SwaggerRenderPlugin()]),
        debug=False,
    )
    openapi.install(app)  # the document describes every request body
    if measured:
        metrics.install(app, gc_statistics)  # GET /metrics (docs/metrics.md)
    app.asgi_handler = _leader_only(app.asgi_handler, app)
    # Outermost: past `in_flight_max` requests in progress, a fast 429 (gateway/admission.py).
    app.state.admission = Admission(app.asgi_handler, settings.in_flight_max,
                                    wait_s=settings.in_flight_wait_ms / 1000,
                                    refusals_per_s=settings.refusals_per_s)
    app.asgi_handler = app.state.admission
    # Reads with a customer token, limited per token (gateway/portal/access.py).
    app.state.token_reads = RateLimiter(settings.token_reads_per_s, settings.token_reads_burst)
    return app
