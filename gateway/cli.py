"""The `creditd` command line."""

from __future__ import annotations

import argparse
import socket
import sys

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.config import ConfigError, Settings
    from gateway.logs import configure_logging

    configure_logging()
    try:
        settings = Settings.from_env(host=args.host, port=args.port,
                                     database_url=args.database_url)
    except ConfigError as exc:
        print(f"creditd serve: {exc}", file=sys.stderr)
        return 2
    if not _open_database(settings.database_url, "serve"):
        return 1
    config = uvicorn.Config(create_app(settings, server_process=True), host=settings.host,
                            port=settings.port,
                            log_level="warning", access_log=False, lifespan="on",
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


def _open_database(url: str | None, command: str) -> bool:
    """Open (and migrate) the database once, reporting failure in one line: a wrong URL,
    an unreachable server or a schema from a newer creditd is an operator's problem to
    read, not a traceback."""
    import anyio

    from persistence import open_store
    from persistence.schema import SchemaTooNew

    async def run() -> None:
        async with open_store(url):
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


def _migrate(args: argparse.Namespace) -> int:
    from persistence.schema import LATEST_VERSION

    if not _open_database(args.database_url, "migrate"):
        return 1
    print(f"database schema is at version {LATEST_VERSION}")
    return 0


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
    serve.add_argument("--fd", type=int, default=None,
                       help="serve on this already-listening socket instead of host:port")
    serve.set_defaults(func=_serve)
    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    migrate.add_argument("--database-url", default=None,
                         help="sqlite:///path or postgresql://…; default $CREDITD_DATABASE_URL "
                              "or sqlite:///data/creditd.db")
    migrate.set_defaults(func=_migrate)
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
