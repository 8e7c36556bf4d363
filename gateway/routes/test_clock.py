"""The test clock: read and move the server's time when it runs with CREDITD_CLOCK=manual.

Renewals, trials, reset periods and promotions all depend on time; an integration test (ours,
or a user's of their own billing flows, as with Stripe's test clocks) moves the clock forward
instead of waiting. With the system clock the endpoint answers 404: there is nothing to move.
Time never goes back (the engine relies on it)."""

from __future__ import annotations

import msgspec
from litestar import Request, Response, get, put

from engine.runtime.clock import ManualClock
from gateway.context import ok, services
from gateway.errors import ApiError, bad_input
from gateway.openapi import request_body
from gateway.wire import TIME_MAX_MS, decode_body, iso, parse_time

__all__ = ["ROUTES"]

_PATH = "/api/v1/test-clock"


class ClockMove(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    now: str | None = None
    advance_seconds: int | None = None


def _manual(request: Request) -> ManualClock:
    clock = services(request).clock
    if not isinstance(clock, ManualClock):
        raise ApiError(404, "NotFound", "the server runs on the system clock; start it with "
                       "CREDITD_CLOCK=manual to move time", "CREDITD_CLOCK")
    return clock


@get(_PATH)
async def read_clock(request: Request) -> Response:
    return ok({"now": iso(_manual(request).now_ms())})


@put(_PATH, opt=request_body(ClockMove))
async def move_clock(request: Request) -> Response:
    clock = _manual(request)
    body = await decode_body(request, ClockMove)
    if (body.now is None) == (body.advance_seconds is None):
        raise bad_input("give either now or advanceSeconds", "now")
    if body.now is not None:
        target = parse_time(body.now, "now")
        assert target is not None
    else:
        assert body.advance_seconds is not None
        target = clock.now_ms() + body.advance_seconds * 1000
    field = "now" if body.now is not None else "advanceSeconds"
    if target < clock.now_ms():
        raise bad_input(f"time never goes back (it is {iso(clock.now_ms())})", field)
    if target >= TIME_MAX_MS:
        raise bad_input(f"must stay before {iso(TIME_MAX_MS)}", field)
    clock.set(target)
    # Whatever is due at the new time (renewals, trial ends, expiries) runs now, before
    # the answer, so a test that reads next sees it done.
    for hook in getattr(request.app.state, "on_clock_moved", ()):
        await hook(target)
    return ok({"now": iso(target)})


ROUTES = [read_clock, move_clock]
