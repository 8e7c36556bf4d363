"""Versioned schema migrations, one list per dialect, applied in order at start-up and by
`creditd migrate`. A database whose version is newer than the last migration here was
written by a newer creditd and is refused rather than misread.

Amounts are BIGINT units of 10^-5 credits and times BIGINT epoch milliseconds (see
engine/core/amounts.py); every stored amount is bounded by 10^17 units.
"""

from __future__ import annotations

from persistence.sql import (
    KEY_FILTER_TABLES,
    KEY_GENERATION_MS,
    KEY_TABLES,
    LEDGER_KINDS,
    key_table_statements,
)

__all__ = ["MIGRATIONS", "SchemaTooNew", "LATEST_VERSION"]


class SchemaTooNew(RuntimeError):
    pass


_COMMON_V1 = [
    """CREATE TABLE customers (
        customer_id TEXT PRIMARY KEY,
        ledger_seq BIGINT NOT NULL,
        event_seq BIGINT NOT NULL,
        op_seq BIGINT NOT NULL,
        grant_seq BIGINT NOT NULL,
        next_due_at BIGINT
    )""",
    # Start-up finds customers with timers through this index, never by scanning them all.
    "CREATE INDEX customers_next_due ON customers (next_due_at) WHERE next_due_at IS NOT NULL",
    """CREATE TABLE grants (
        customer_id TEXT NOT NULL,
        id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        currency_id TEXT NOT NULL,
        resource_id TEXT,
        grant_type TEXT NOT NULL,
        status TEXT NOT NULL,
        priority INTEGER NOT NULL,
        effective_at BIGINT NOT NULL,
        expire_at BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        voided_at BIGINT,
        amount BIGINT NOT NULL,
        available BIGINT NOT NULL,
        held BIGINT NOT NULL,
        consumed BIGINT NOT NULL,
        expired BIGINT NOT NULL,
        voided BIGINT NOT NULL,
        activated BOOLEAN NOT NULL,
        cost_amount BIGINT,
        cost_currency TEXT,
        display_name TEXT NOT NULL,
        comment TEXT,
        metadata TEXT,
        PRIMARY KEY (customer_id, id)
    )""",
    "CREATE INDEX grants_by_created ON grants (customer_id, created_at, id)",
    """CREATE TABLE reservations (
        customer_id TEXT NOT NULL,
        id TEXT NOT NULL,
        currency_id TEXT NOT NULL,
        resource_id TEXT,
        amount BIGINT NOT NULL,
        holds TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        released_at BIGINT,
        consumed_amount BIGINT,
        metadata TEXT,
        PRIMARY KEY (customer_id, id)
    )""",
    "CREATE INDEX reservations_settled ON reservations (released_at) WHERE released_at IS NOT NULL",
    """CREATE TABLE pools (
        customer_id TEXT NOT NULL,
        currency_id TEXT NOT NULL,
        resource_key TEXT NOT NULL,
        resource_id TEXT,
        hard_limit BOOLEAN NOT NULL,
        low_balance_units BIGINT,
        usage_low_percent INTEGER NOT NULL,
        PRIMARY KEY (customer_id, currency_id, resource_key)
    )""",
    # Append-only: rows are inserted, never updated or deleted.
    """CREATE TABLE ledger (
        customer_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        op_seq BIGINT NOT NULL,
        event_type TEXT NOT NULL,
        grant_id TEXT NOT NULL,
        currency_id TEXT NOT NULL,
        resource_id TEXT,
        amount BIGINT NOT NULL,
        ts BIGINT NOT NULL,
        reservation_id TEXT,
        feature_id TEXT,
        idempotency_key TEXT,
        dimensions TEXT,
        PRIMARY KEY (customer_id, seq)
    )""",
    """CREATE TABLE idempotency_keys (
        customer_id TEXT NOT NULL,
        key TEXT NOT NULL,
        command BYTES NOT NULL,
        reply BYTES NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (customer_id, key)
    )""",
    "CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at)",
    # The outbox id is assigned by the single writer in commit order, so it is gapless and a
    # relay tailing `id > last_seen` never skips a row (see persistence/durable.py).
    """CREATE TABLE outbox (
        id BIGINT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        type TEXT NOT NULL,
        payload BYTES NOT NULL,
        created_at BIGINT NOT NULL
    )""",
]


# v2: what the HTTP gateway keeps per environment (API keys, currencies, customer profiles).
# Customer profiles are a JSON document: the contract's Customer has many optional fields
# that are stored and returned, never computed on.
_COMMON_V2 = [
    """CREATE TABLE api_keys (
        key_hash TEXT PRIMARY KEY,
        environment TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )""",
    """CREATE TABLE currencies (
        environment TEXT NOT NULL,
        id TEXT NOT NULL,
        doc TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        archived_at BIGINT,
        PRIMARY KEY (environment, id)
    )""",
    "CREATE INDEX currencies_list ON currencies (environment, created_at, id)",
    """CREATE TABLE customer_profiles (
        environment TEXT NOT NULL,
        id TEXT NOT NULL,
        doc TEXT NOT NULL,
        email TEXT,
        name TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        archived_at BIGINT,
        PRIMARY KEY (environment, id)
    )""",
    "CREATE INDEX customer_profiles_list ON customer_profiles (environment, created_at, id)",
    # The customer list filters on these two exact matches.
    "CREATE INDEX customer_profiles_email ON customer_profiles (environment, email)",
    "CREATE INDEX customer_profiles_name ON customer_profiles (environment, name)",
    # Voiding names only the grant, so the gateway finds its customer by grant id.
    "CREATE INDEX grants_by_id ON grants (id)",
]


# v3: metering. Features are documents like currencies, with the columns lists filter on.
_COMMON_V3 = [
    """CREATE TABLE features (
        environment TEXT NOT NULL,
        id TEXT NOT NULL,
        doc TEXT NOT NULL,
        feature_type TEXT,
        meter_type TEXT,
        feature_status TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        archived_at BIGINT,
        PRIMARY KEY (environment, id)
    )""",
    "CREATE INDEX features_list ON features (environment, created_at, id)",
    # Current usage per customer, feature and resource (engine.core.usage).
    """CREATE TABLE usage_counters (
        customer_id TEXT NOT NULL,
        feature_id TEXT NOT NULL,
        resource_key TEXT NOT NULL,
        resource_id TEXT,
        function TEXT NOT NULL,
        value BIGINT NOT NULL,
        total BIGINT NOT NULL,
        count BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (customer_id, feature_id, resource_key)
    )""",
    """CREATE TABLE usage_unique_values (
        customer_id TEXT NOT NULL,
        feature_id TEXT NOT NULL,
        resource_key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (customer_id, feature_id, resource_key, value)
    )""",
    # Hourly pre-aggregates for the usage and credit-usage series: a query over a range
    # reads at most one row per hour per (feature, resource, currency, dimensions), however
    # many events and consumptions happened, and the primary key orders them by time.
    """CREATE TABLE usage_buckets (
        customer_id TEXT NOT NULL,
        hour BIGINT NOT NULL,
        feature_key TEXT NOT NULL,
        resource_key TEXT NOT NULL,
        currency_key TEXT NOT NULL,
        dims TEXT NOT NULL,
        feature_id TEXT,
        resource_id TEXT,
        currency_id TEXT,
        usage BIGINT NOT NULL,
        credits BIGINT NOT NULL,
        events BIGINT NOT NULL,
        PRIMARY KEY (customer_id, hour, feature_key, resource_key, currency_key, dims)
    )""",
    """CREATE TABLE usage_dimension_keys (
        customer_id TEXT NOT NULL,
        key TEXT NOT NULL,
        PRIMARY KEY (customer_id, key)
    )""",
    # Raw events as accepted; the primary key deduplicates their idempotency keys, and
    # they are purged after the key retention (by acceptance time).
    """CREATE TABLE events (
        customer_id TEXT NOT NULL,
        key TEXT NOT NULL,
        event_name TEXT NOT NULL,
        ts BIGINT NOT NULL,
        resource_id TEXT,
        dimensions TEXT,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (customer_id, key)
    )""",
    "CREATE INDEX events_age ON events (created_at)",
]


# v4: webhooks (webhooks/tables.py holds the statements that use these tables).
_COMMON_V4 = [
    """CREATE TABLE webhook_endpoints (
        id TEXT PRIMARY KEY,
        environment TEXT NOT NULL,
        url TEXT NOT NULL,
        description TEXT,
        event_types TEXT NOT NULL,
        enabled BOOLEAN NOT NULL,
        disabled_reason TEXT,
        secret TEXT NOT NULL,
        previous_secret TEXT,
        previous_secret_until BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        -- A deleted endpoint stays as a tombstone until the purge has removed its
        -- deliveries in bounded steps.
        deleted_at BIGINT
    )""",
    "CREATE INDEX webhook_endpoints_list ON webhook_endpoints (environment, created_at, id)",
    # One row per outbox event of an environment that has endpoints: the payload exactly as
    # signed and sent, stored once however many endpoints receive it; replay reads it back.
    """CREATE TABLE webhook_events (
        outbox_id BIGINT PRIMARY KEY,
        environment TEXT NOT NULL,
        event_id TEXT NOT NULL,
        type TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        payload BYTES NOT NULL
    )""",
    "CREATE INDEX webhook_events_since ON webhook_events (environment, created_at)",
    # One row per (endpoint, event) to deliver, and one more per replay. `next_attempt_at`
    # is set on exactly one pending row per (endpoint, customer) lane, its head; the rest of
    # the lane waits behind it, which is what keeps a customer's events in order.
    """CREATE TABLE webhook_deliveries (
        id BIGINT PRIMARY KEY,
        endpoint_id TEXT NOT NULL,
        outbox_id BIGINT NOT NULL,
        customer_id TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at BIGINT,
        last_attempt_at BIGINT,
        last_status_code INTEGER,
        last_latency_ms INTEGER,
        last_error TEXT,
        created_at BIGINT NOT NULL,
        delivered_at BIGINT,
        replay_of BIGINT
    )""",
    # The dispatcher's scan: due lane heads of one endpoint, earliest first.
    "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at, id) "
    "WHERE next_attempt_at IS NOT NULL",
    # A lane's pending rows in queue order: finding the next head, and whether one exists.
    "CREATE INDEX webhook_deliveries_lane ON webhook_deliveries (endpoint_id, customer_id, id) "
    "WHERE status = 'PENDING'",
    "CREATE INDEX webhook_deliveries_list ON webhook_deliveries (endpoint_id, status, id)",
    "CREATE INDEX webhook_deliveries_recent ON webhook_deliveries (endpoint_id, id)",
    # The purge keeps a stored event while any delivery still refers to it.
    "CREATE INDEX webhook_deliveries_event ON webhook_deliveries (outbox_id)",
    """CREATE TABLE webhook_attempts (
        id BIGINT PRIMARY KEY,
        delivery_id BIGINT NOT NULL,
        endpoint_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        started_at BIGINT NOT NULL,
        status_code INTEGER,
        latency_ms INTEGER NOT NULL,
        error TEXT,
        response TEXT
    )""",
    "CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempt)",
    "CREATE INDEX webhook_attempts_recent ON webhook_attempts (endpoint_id, id)",
    # The relay's position in the outbox, moved in the same transaction as the deliveries it
    # creates. A database that already has an outbox starts at its end: events committed
    # before webhooks existed had no endpoints to go to.
    """CREATE TABLE webhook_relay (
        name TEXT PRIMARY KEY,
        outbox_cursor BIGINT NOT NULL
    )""",
    "INSERT INTO webhook_relay (name, outbox_cursor) "
    "SELECT 'webhooks', coalesce(max(id), 0) FROM outbox",
]


# v5: the live feed (gateway/feed). Resuming a customer's feed reads its outbox rows by
# sequence; customer tokens are signed with a secret generated once and kept here, so
# tokens survive restarts and work on every server sharing the database.
_COMMON_V5 = [
    "CREATE INDEX outbox_customer ON outbox (customer_id, seq)",
    """CREATE TABLE server_secrets (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )""",
]


# v6: auto-recharge (engine.core.recharge). A pool keeps its settings and month state as
# one msgpack document, and the grant id of a recharge in flight in a column of its own so
# that start-up finds the recharges to resume without reading every pool.
_COMMON_V6 = [
    "ALTER TABLE pools ADD COLUMN recharge BYTES",
    "ALTER TABLE pools ADD COLUMN recharge_pending TEXT",
    "CREATE INDEX pools_recharge_pending ON pools (recharge_pending)",
    # What the default payment provider records: one charge per idempotency key (the
    # recharge's grant id), so a retried or resumed payment finds its charge again.
    """CREATE TABLE recharge_charges (
        idempotency_key TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        currency_id TEXT NOT NULL,
        resource_id TEXT,
        credits BIGINT NOT NULL,
        amount BIGINT NOT NULL,
        amount_currency TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )""",
    "CREATE INDEX recharge_charges_customer ON recharge_charges (customer_id, created_at)",
]


# v7: the catalog of issue 9, starting with coupons (documents like currencies; `type`
# is copied into a column for the list filter).
_COMMON_V7 = [
    """CREATE TABLE coupons (
        environment TEXT NOT NULL,
        id TEXT NOT NULL,
        doc TEXT NOT NULL,
        type TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        archived_at BIGINT,
        PRIMARY KEY (environment, id)
    )""",
    "CREATE INDEX coupons_list ON coupons (environment, created_at, id)",
]


def _documents(table: str, *extra: str) -> list[str]:
    """A table of catalog documents (persistence.documents.Catalog), with `extra` columns that
    lists filter on copied out of the document."""
    columns = "".join(f"        {c} TEXT,\n" for c in extra)
    return [
        f"""CREATE TABLE {table} (
        environment TEXT NOT NULL,
        id TEXT NOT NULL,
        doc TEXT NOT NULL,
{columns}        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        archived_at BIGINT,
        PRIMARY KEY (environment, id)
    )""",
        f"CREATE INDEX {table}_list ON {table} (environment, created_at, id)",
    ]


# v8: the rest of issue 9's catalog. Products, plans and add-ons are documents; a plan's or
# add-on's row is its working copy (latest version, draft or published), and every
# published version is kept, immutable, in package_versions (subscriptions point at one).
_COMMON_V8 = [
    *_documents("products"),
    *_documents("plans", "product_id", "status"),
    *_documents("addons", "product_id", "status"),
    """CREATE TABLE package_versions (
        environment TEXT NOT NULL,
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        doc TEXT NOT NULL,
        published_at BIGINT NOT NULL,
        PRIMARY KEY (environment, kind, id, version)
    )""",
    # Subscriptions: documents with the columns lists filter on, and `due_at`, when the
    # next scheduled change (period rollover, trial end, cancellation) falls due, so the
    # scheduler finds due subscriptions without reading every one.
    *_documents("subscriptions", "customer_id", "plan_id", "status", "resource_id"),
    "ALTER TABLE subscriptions ADD COLUMN due_at BIGINT",
    "CREATE INDEX subscriptions_customer ON subscriptions (environment, customer_id)",
    "CREATE INDEX subscriptions_due ON subscriptions (due_at)",
    # One promotional entitlement per customer and feature (granting again replaces it).
    """CREATE TABLE promotional_entitlements (
        environment TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        feature_id TEXT NOT NULL,
        doc TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        archived_at BIGINT,
        PRIMARY KEY (environment, customer_id, feature_id)
    )""",
    # The start of the usage window a counter counts (NULL: the feature never resets).
    "ALTER TABLE usage_counters ADD COLUMN period_start BIGINT",
]


# v9: lean rows (docs/architecture.md, "Storage layout"). What grows with every operation —
# the ledger and the idempotency keys — names its customer by number, its grant by
# sequence number and its event type by a code; keys remember a digest of the request
# (not the command) and a compact reply, and live in two generation tables that are
# emptied a week at a time (persistence/sql.py, KEY_GENERATION_MS) instead of an index
# on their age. Existing rows are carried over: ledger rows with their customers' numbers
# and grants' sequence numbers, keys into the table of their generation (their command
# and reply stay in the older encodings, which persistence/codec.py still reads).
def _v9(dialect: str) -> list[str]:
    sqlite = dialect == "sqlite"
    clustered = " WITHOUT ROWID" if sqlite else ""
    kinds = " ".join(f"WHEN '{name}' THEN {code}" for name, code in LEDGER_KINDS.items())
    period = f"(k.created_at / {KEY_GENERATION_MS})"
    statements = [
        "ALTER TABLE customers ADD COLUMN num BIGINT",
        "ALTER TABLE customers ADD COLUMN key_period BIGINT",
        *(["UPDATE customers SET num = rowid"] if sqlite else [
            # Numbers for new customers come from this sequence (one per database, so any
            # number of processes may hand them out).
            "CREATE SEQUENCE customer_numbers",
            "UPDATE customers SET num = nextval('customer_numbers')"]),
        "CREATE UNIQUE INDEX customers_num ON customers (num)",
        # Every grant of a customer now has its own sequence number (ledger rows name grants
        # by it); overdraft grants used to share 0, and get negative ones here.
        "UPDATE grants SET seq = -(SELECT count(*) FROM grants g2 WHERE g2.customer_id = "
        "grants.customer_id AND g2.grant_type = 'OVERDRAFT' AND g2.id <= grants.id) "
        "WHERE grant_type = 'OVERDRAFT' AND seq = 0",
        "CREATE UNIQUE INDEX grants_seq ON grants (customer_id, seq)",
        # Integers first: PostgreSQL aligns each to 8 bytes, so mixed order costs padding.
        f"""CREATE TABLE ledger_v9 (
        customer BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        op_seq BIGINT NOT NULL,
        amount BIGINT NOT NULL,
        ts BIGINT NOT NULL,
        grant_seq INTEGER NOT NULL,
        kind SMALLINT NOT NULL,
        reservation_id TEXT,
        feature_id TEXT,
        dimensions TEXT,
        PRIMARY KEY (customer, seq)
    ){clustered}""",
        "INSERT INTO ledger_v9 (customer, seq, op_seq, amount, ts, grant_seq, kind, "
        "reservation_id, feature_id, dimensions) "
        f"SELECT c.num, l.seq, l.op_seq, l.amount, l.ts, g.seq, CASE l.event_type {kinds} END, "
        "l.reservation_id, l.feature_id, l.dimensions FROM ledger l "
        "JOIN customers c ON c.customer_id = l.customer_id "
        "JOIN grants g ON g.customer_id = l.customer_id AND g.id = l.grant_id",
        "DROP TABLE ledger",
        "ALTER TABLE ledger_v9 RENAME TO ledger",
        *([] if sqlite else ["ALTER INDEX ledger_v9_pkey RENAME TO ledger_pkey"]),
        "CREATE TABLE key_generations (generation INTEGER PRIMARY KEY, period BIGINT NOT NULL)",
    ]
    for generation, table in enumerate(KEY_TABLES):
        statements += [
            *key_table_statements(dialect, table),
            f"INSERT INTO {table} (customer, created_at, op_seq, key, request, reply) "
            f"SELECT c.num, k.created_at, NULL, k.key, k.command, k.reply "
            "FROM idempotency_keys k JOIN customers c ON c.customer_id = k.customer_id "
            f"WHERE {period} % 2 = {generation}",
            f"INSERT INTO key_generations (generation, period) SELECT {generation}, "
            f"coalesce(max({period}), -1) FROM idempotency_keys k "
            f"WHERE {period} % 2 = {generation}",
        ]
    return [
        *statements,
        # Customers with keys must look them up (CustomerState.keys_complete).
        f"UPDATE customers SET key_period = (SELECT max({period}) FROM idempotency_keys k "
        "WHERE k.customer_id = customers.customer_id)",
        "DROP TABLE idempotency_keys",
    ]


# v10: a key generation is a series of tables, its runs (persistence/sql.py,
# KEY_RUN_ROWS): the existing table of each generation is its first run, and is the one
# being written.
_V10 = [
    "ALTER TABLE key_generations ADD COLUMN runs INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE key_generations ADD COLUMN run INTEGER NOT NULL DEFAULT 0",
]


# v11: scale-out (persistence/cluster.py). Shard leases with epochs, and the nodes that
# hold them. SQLite gets the tables too (one process never takes a lease), so both
# dialects keep one version number.
def _v11(dialect: str) -> list[str]:
    time = "TIMESTAMPTZ" if dialect == "postgresql" else "TEXT"
    statements = [
        "CREATE TABLE cluster_nodes (node_id TEXT PRIMARY KEY, address TEXT NOT NULL, "
        f"started_at BIGINT NOT NULL, seen_at {time} NOT NULL, "
        "leaving BOOLEAN NOT NULL DEFAULT FALSE)",
        # One row per virtual shard, and shard -1: the leader's lease (once-only jobs).
        "CREATE TABLE shard_leases (shard INTEGER PRIMARY KEY, owner TEXT, address TEXT, "
        f"epoch BIGINT NOT NULL DEFAULT 0, expires_at {time})",
    ]
    # The last outbox id handed out by a cluster's flushes (persistence/postgres.py).
    statements.append("CREATE TABLE outbox_counter (one INTEGER PRIMARY KEY, "
                      "last BIGINT NOT NULL)")
    if dialect == "postgresql":
        statements += [
            "INSERT INTO shard_leases (shard) SELECT generate_series(-1, 1023)",
            "INSERT INTO outbox_counter (one, last) SELECT 1, coalesce(max(id), 0) FROM outbox",
        ]
    return _dialect(statements, dialect)


# v12: each key generation's filter bits (persistence/key_filter.py), saved as it starts a
# new run: they hold every key of the generation's runs before `runs` in `period`, so a
# process that opens the store reads back only the runs after. One table per generation,
# emptied (a TRUNCATE on PostgreSQL: no dead copy of megabytes left for vacuum) and filled
# again a part of the bits per row; only a whole set of parts of the period the generation
# holds is taken back.
def _v12(dialect: str) -> list[str]:
    statements = []
    for table in KEY_FILTER_TABLES:
        statements.append(f"CREATE TABLE {table} (part INTEGER PRIMARY KEY, "
                          "period BIGINT NOT NULL, runs INTEGER NOT NULL, "
                          "scheme TEXT NOT NULL, bits BYTES NOT NULL)")
        if dialect == "postgresql":
            # Random bits do not compress: store them without trying.
            statements.append(f"ALTER TABLE {table} ALTER COLUMN bits SET STORAGE EXTERNAL")
    return _dialect(statements, dialect)


def _dialect(statements: list[str], dialect: str) -> list[str]:
    if dialect == "postgresql":
        return [s.replace("BYTES", "BYTEA") for s in statements]
    return [s.replace("BYTES", "BLOB").replace("BOOLEAN", "INTEGER") for s in statements]


_VERSIONS = [_COMMON_V1, _COMMON_V2, _COMMON_V3, _COMMON_V4, _COMMON_V5, _COMMON_V6,
             _COMMON_V7, _COMMON_V8]
MIGRATIONS: dict[str, list[list[str]]] = {
    dialect: [*(_dialect(statements, dialect) for statements in _VERSIONS), _v9(dialect),
              _V10, _v11(dialect), _v12(dialect)]
    for dialect in ("sqlite", "postgresql")
}
LATEST_VERSION = len(_VERSIONS) + 4
assert all(len(m) == LATEST_VERSION for m in MIGRATIONS.values())
