"""The `creditd` command line."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.config import ConfigError, Settings
    from gateway.http_protocol import OneWriteHttpToolsProtocol
    from gateway.logs import configure_logging

    configure_logging()
    try:
        settings = Settings.from_env(host=args.host, port=args.port,
                                     database_url=args.database_url, memory_mb=args.memory_mb)
    except ConfigError as exc:
        print(f"creditd serve: {exc}", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers != 1:
        refused = _workers_refused(settings, args.workers)
        if refused:
            print(f"creditd serve: {refused}", file=sys.stderr)
            return 2
    if not _open_database(settings.database_url, "serve"):
        return 1
    catalog = args.catalog or os.environ.get("CREDITD_CATALOG") or None
    if catalog and _apply_catalog(settings.database_url, args.catalog_environment, catalog,
                                  dry_run=False, command="serve") != 0:
        return 1
    if args.workers is not None and args.workers > 1:
        return _supervise(args, settings)
    config = uvicorn.Config(create_app(settings, server_process=True), host=settings.host,
                            port=settings.port,
                            log_level="warning", access_log=False, lifespan="on",
                            # Each response in one write (gateway/http_protocol.py).
                            http=OneWriteHttpToolsProtocol,
                            # Nothing here reads the client's address or scheme, so
                            # X-Forwarded-* need not be rewritten into every request's scope
                            # (uvicorn's ProxyHeadersMiddleware: ~1 % of the loop's time).
                            proxy_headers=False,
                            # Protocol pings close dead feed connections (docs/feed.md).
                            ws_ping_interval=settings.feed_ping_interval_s,
                            ws_ping_timeout=settings.feed_ping_timeout_s,
                            # Feed frames are small JSON sent to many sockets at once:
                            # compressing each copy cost a quarter of the server's time
                            # in scripts/bench_feed.py for a few bytes saved.
                            ws_per_message_deflate=False)
    server = uvicorn.Server(config)
    if args.fd is None:
        server.run()
    else:
        # A socket bound and listening already (systemd socket activation, or a test
        # harness that must know the port before the server starts). Not uvicorn's own
        # `fd=`: it wraps the descriptor as AF_UNIX, so asyncio would not set TCP_NODELAY
        # on accepted TCP connections and every keep-alive response would wait out the
        # client's delayed ACK (~40 ms). socket.socket(fileno=) reads the real family.
        server.run(sockets=[socket.socket(fileno=args.fd)])
    return 0


def _workers_refused(settings: Any, workers: int) -> str | None:
    """Why `--workers N` cannot run here (None: it can)."""
    from persistence import resolve_database_url

    if workers < 1:
        return f"--workers {workers}: must be at least 1"
    url = resolve_database_url(settings.database_url)
    if not url.startswith(("postgresql:", "postgres:")):
        return (f"--workers {workers} needs PostgreSQL (--database-url postgresql://…): "
                "SQLite is the embedded database of one process, and several processes "
                "share customers only through PostgreSQL's shard leases (docs/operations.md, "
                "\"Running a cluster\")")
    if settings.cluster == "off":
        return f"--workers {workers} needs the cluster's leases; CREDITD_CLUSTER is 'off'"
    return None


def _supervise(args: argparse.Namespace, settings: Any) -> int:
    """`--workers N`: bind the port once, run N `creditd serve --fd` processes that all
    accept on it (the kernel spreads connections), each a cluster node with its own
    leases; restart one that dies, and stop them all on SIGTERM or SIGINT."""
    import signal
    import subprocess
    import time

    sock = socket.create_server((settings.host, settings.port), backlog=2048,
                                reuse_port=False)
    sock.set_inheritable(True)
    fd = sock.fileno()
    command = [sys.executable, "-m", "gateway.cli", "serve", "--fd", str(fd)]
    if args.database_url:
        command += ["--database-url", args.database_url]
    if args.memory_mb:
        command += ["--memory-mb", str(args.memory_mb)]
    children: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def start(slot: int) -> None:
        children[slot] = subprocess.Popen(command, pass_fds=(fd,))

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(args.workers):
        start(slot)
    print(f"creditd: {args.workers} worker processes on http://{settings.host}:"
          f"{settings.port} (pids {' '.join(str(c.pid) for c in children.values())})",
          flush=True)
    restarts: dict[int, float] = {}
    while children:
        time.sleep(0.2)
        for slot, child in list(children.items()):
            code = child.poll()
            if code is None:
                continue
            if stopping:
                del children[slot]
                continue
            # Died on its own: its leases lapse and the others take its customers; a new
            # process joins as a fresh node (at most one restart a second per slot).
            print(f"creditd: worker {child.pid} exited with {code}; starting another",
                  file=sys.stderr, flush=True)
            wait = restarts.get(slot, 0) + 1 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            restarts[slot] = time.monotonic()
            start(slot)
    sock.close()
    return 0


def _open_database(url: str | None, command: str) -> bool:
    """Open (and migrate) the database once, reporting failure in one line: a wrong URL,
    an unreachable server or a schema from a newer creditd is an operator's problem to
    read, not a traceback."""
    import anyio

    from persistence import open_store
    from persistence.schema import SchemaTooNew

    async def run() -> None:
        async with open_store(url, key_filter_bytes=0):  # migrate only
            pass

    try:
        anyio.run(run)
    except SchemaTooNew as exc:
        print(f"creditd {command}: {exc}", file=sys.stderr)
        return False
    except Exception as exc:  # noqa: BLE001 - any driver error: say what it was, and stop
        reason = str(exc) or type(exc).__name__
        print(f"creditd {command}: cannot open the database: {reason}", file=sys.stderr)
        return False
    return True


def _apply_catalog(database_url: str | None, env: str, path: str, *, dry_run: bool,
                   command: str) -> int:
    """Apply a catalog file (gateway/catalog_file/), printing one line per item that
    changes; 1 with the reason on stderr if the file cannot be applied (nothing is)."""
    import anyio

    from gateway.catalog_file import CatalogError, apply_path

    try:
        changes = anyio.run(lambda: apply_path(database_url, env, path, dry_run=dry_run))
    except CatalogError as exc:
        print(f"creditd {command}: {exc}", file=sys.stderr)
        return 1
    prefix = "would " if dry_run else ""
    changed = [c for c in changes if c.action != "unchanged"]
    for change in changed:
        print(f"{prefix}{change.line()}")
    if not changed:
        print(f"catalog {path}: no changes ({len(changes)} items unchanged)")
    else:
        print(f"catalog {path}: {len(changed)} {'to change' if dry_run else 'changed'}, "
              f"{len(changes) - len(changed)} unchanged (environment {env!r})")
    return 0


def _catalog_apply(args: argparse.Namespace) -> int:
    if not _open_database(args.database_url, "catalog apply"):
        return 1
    return _apply_catalog(args.database_url, args.environment, args.file,
                          dry_run=args.dry_run, command="catalog apply")


def _migrate(args: argparse.Namespace) -> int:
    from persistence.schema import LATEST_VERSION

    if not _open_database(args.database_url, "migrate"):
        return 1
    print(f"database schema is at version {LATEST_VERSION}")
    return 0


def _database_url(args: argparse.Namespace) -> str:
    from persistence import resolve_database_url

    return resolve_database_url(args.database_url)


def _since(value: str | None) -> str | None:
    """`--since`: a cursor, or `@FILE` holding one (a previous export's export.json, or
    the `cursor: …` line it printed): cursors grow with the customers."""
    if value is None or not value.startswith("@"):
        return value
    from pathlib import Path

    text = Path(value[1:]).read_text(encoding="utf-8").strip()
    if text.startswith("{"):
        import json

        return str(json.loads(text)["cursor"])
    return text.removeprefix("cursor:").strip()


def _export(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import anyio

    from persistence.export import ExportError, export

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    try:
        since = _since(args.since)
    except (OSError, KeyError, ValueError) as exc:
        print(f"creditd export: --since {args.since}: no cursor there ({exc!r})",
              file=sys.stderr)
        return 2
    try:
        result = anyio.run(lambda: export(
            _database_url(args), Path(args.out), fmt=args.format, tables=tables,
            since=since, environment=args.environment, now_ms=int(time.time() * 1000),
            say=say))
    except ExportError as exc:
        print(f"creditd export: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output directory, or the database server unreachable
        print(f"creditd export: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a driver error: say what it was, and stop
        print(f"creditd export: cannot read the database: {exc or type(exc).__name__}",
              file=sys.stderr)
        return 1
    for table, path in result.files.items():
        print(f"{table}: {result.rows[table]} rows -> {path}")
    print(f"cursor: {result.cursor}")
    return 0


def _sqlite_only(args: argparse.Namespace, command: str) -> str | None:
    """The SQLite file path of --database-url, or None after saying why not."""
    url = _database_url(args)
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):]
    from persistence.backup import PG_ADVICE

    if url.startswith(("postgresql://", "postgres://")):
        print(f"creditd {command}: copies SQLite databases only; {PG_ADVICE}",
              file=sys.stderr)
    else:
        print(f"creditd {command}: {url!r} is not a sqlite:/// URL", file=sys.stderr)
    return None


def _copy(args: argparse.Namespace, command: str) -> int:
    """`creditd backup` (the database to args.path) or `creditd restore` (args.path to
    the database)."""
    import sqlite3
    from pathlib import Path

    from persistence.backup import BackupError, backup_sqlite, restore_sqlite

    database = _sqlite_only(args, command)
    if database is None:
        return 2
    backing_up = command == "backup"
    source, target = (database, args.path) if backing_up else (args.path, database)
    copy = backup_sqlite if backing_up else restore_sqlite
    try:
        version = copy(Path(source), Path(target), force=args.force)
    except (BackupError, OSError, sqlite3.Error) as exc:
        print(f"creditd {command}: {exc}", file=sys.stderr)
        return 1
    done, to = ("backed up", "to") if backing_up else ("restored", "into")
    print(f"{done} {source} (schema version {version}) {to} {target}")
    return 0


def _add_data_commands(sub: Any) -> None:
    url_help = "default $CREDITD_DATABASE_URL or sqlite:///data/creditd.db"
    export = sub.add_parser(
        "export", help="write the credits tables as CSV or Parquet files (docs/exports.md)")
    export.add_argument("--database-url", default=None, help=url_help)
    export.add_argument("--out", required=True, metavar="DIR",
                        help="a new or empty directory for the files")
    export.add_argument("--format", default="csv", choices=("csv", "parquet"))
    export.add_argument("--since", default=None, metavar="CURSOR",
                        help="the cursor a previous export printed (or @FILE holding it, "
                             "such as its export.json): only what is new since")
    export.add_argument("--tables", default=",".join(_export_tables()),
                        help="comma-separated, default all: %(default)s")
    export.add_argument("--environment", default=None, metavar="ENV",
                        help="only this environment's customers (default: all)")
    export.set_defaults(func=_export)
    backup = sub.add_parser("backup", help="copy the SQLite database, online and "
                                           "consistent (docs/exports.md)")
    backup.add_argument("path", help="the backup file to write")
    backup.add_argument("--database-url", default=None, help=url_help)
    backup.add_argument("--force", action="store_true", help="replace an existing file")
    backup.set_defaults(func=lambda args: _copy(args, "backup"))
    restore = sub.add_parser("restore", help="replace the SQLite database with a backup "
                                             "(the server stopped)")
    restore.add_argument("path", help="the backup file to restore")
    restore.add_argument("--database-url", default=None, help=url_help)
    restore.add_argument("--force", action="store_true",
                         help="replace an existing database (never one in use)")
    restore.set_defaults(func=lambda args: _copy(args, "restore"))


def _export_tables() -> tuple[str, ...]:
    from persistence.export import TABLES

    return TABLES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="creditd",
                                     description="Usage metering and prepaid credits")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=None, help="default $CREDITD_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default $CREDITD_PORT or 8000")
    serve.add_argument("--database-url", default=None,
                       help="default $CREDITD_DATABASE_URL or sqlite:///data/creditd.db")
    serve.add_argument("--memory-mb", type=int, default=None, metavar="MB",
                       help="memory budget for resident customers and remembered keys; "
                            "default $CREDITD_MEMORY_MB or 256 (docs/operations.md)")
    serve.add_argument("--fd", type=int, default=None,
                       help="serve on this already-listening socket instead of host:port")
    serve.add_argument("--workers", type=int, default=None, metavar="N",
                       help="run N processes on the port, sharing the customers "
                            "(PostgreSQL only; docs/operations.md, \"Running a cluster\")")
    serve.add_argument("--catalog", default=None, metavar="FILE",
                       help="apply this catalog file (TOML, docs/catalog.md) at start-up; "
                            "default $CREDITD_CATALOG")
    serve.add_argument("--catalog-environment", default="default", metavar="ENV",
                       help="the environment --catalog applies to (default: default)")
    serve.set_defaults(func=_serve)
    catalog = sub.add_parser("catalog", help="manage the product catalog")
    catalog_sub = catalog.add_subparsers(dest="catalog_command")
    apply_cmd = catalog_sub.add_parser(
        "apply", help="make the catalog say what a TOML file says (docs/catalog.md)")
    apply_cmd.add_argument("file", help="the catalog file (TOML)")
    apply_cmd.add_argument("--environment", default="default",
                           help="the environment to apply it to (default: default)")
    apply_cmd.add_argument("--dry-run", action="store_true",
                           help="print what would change, change nothing")
    apply_cmd.add_argument("--database-url", default=None,
                           help="default $CREDITD_DATABASE_URL or sqlite:///data/creditd.db")
    apply_cmd.set_defaults(func=_catalog_apply)
    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    migrate.add_argument("--database-url", default=None,
                         help="sqlite:///path or postgresql://…; default $CREDITD_DATABASE_URL "
                              "or sqlite:///data/creditd.db")
    migrate.set_defaults(func=_migrate)
    _add_data_commands(sub)
    args = parser.parse_args(argv)
    if args.version:
        from engine import __version__

        print(__version__)
        return 0
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
