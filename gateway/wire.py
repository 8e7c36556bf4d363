"""Wire helpers: decoding request bodies and query values with errors that name the field,
time and amount formatting in the contract's shapes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.params import FromQuery

from engine.core.amounts import AMOUNT_UNITS_MAX, SCALE, units_to_json
from engine.core.commands import Dimensions
from engine.core.meters import signed_units
from engine.domain.values import TIME_MAX_MS, TIME_MIN_MS, ascii_int, time_in, units_in
from engine.times import iso
from gateway.errors import bad_input, field_of

__all__ = ["decode", "decode_body", "iso", "parse_time", "amount_in", "amount_out", "limit_in",
           "created_at_bounds", "signed_amount_in", "PageQuery", "page_query", "Dimensions",
           "DIMENSIONS_MAX", "dimensions_in", "ascii_int", "TIME_MAX_MS", "TIME_MIN_MS"]

T = TypeVar("T")
_decoders: dict[type, msgspec.json.Decoder] = {}


def decode(body: bytes, kind: type[T]) -> T:
    """Decode a JSON body into `kind` (a msgspec Struct); JSON numbers become Decimal
    where the Struct says so, so amounts never pass through a binary float."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind, float_hook=Decimal)
    if not body:
        body = b"{}"
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, field = field_of(exc)
        raise bad_input(message, field) from None
    except msgspec.DecodeError as exc:
        raise bad_input(f"the body is not valid JSON: {exc}") from None



async def decode_body(request: Request, kind: type[T], raw: bytes | None = None) -> T:
    """The request's body (or `raw`, the body already read) decoded into `kind`, which
    the route declares for the OpenAPI document (`opt=openapi.request_body(kind)`)."""
    declared = request.route_handler.opt.get("body")
    if declared is not kind:
        # A bug, met by the first request to the route: the document would say otherwise.
        raise TypeError(f"{request.route_handler.handler_name} decodes {kind.__name__} "
                        f"but declares {getattr(declared, '__name__', declared)}")
    return decode(await request.body() if raw is None else raw, kind)

# Times as the API takes them (engine/domain/values.py): ISO-8601, 1970 to 9000.
parse_time = time_in


_BOUNDS = (("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<="))


def created_at_bounds(request: Any) -> list[tuple[str, int]]:
    """`createdAt[gt|gte|lt|lte]=<ISO time>` query parameters (the client's bracket form)
    as ((SQL operator, epoch ms), …)."""
    bounds = []
    for op, symbol in _BOUNDS:
        value = request.query_params.get(f"createdAt[{op}]")
        if value is not None:
            ms = parse_time(value, f"createdAt[{op}]")
            assert ms is not None
            bounds.append((symbol, ms))
    return bounds


# An amount from the wire as units (engine/domain/values.py).
amount_in = units_in


def signed_amount_in(value: Any, field: str) -> int:
    """A signed wire number (usage deltas may be negative) as units, rounded half away
    from zero to 5 decimals, within ±10^12."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise bad_input("must be a number", field)
    number = Decimal(value)
    if not number.is_finite():
        raise bad_input("must be a finite number", field)
    units = signed_units(number)
    if units is None:
        raise bad_input(f"must be within ±{AMOUNT_UNITS_MAX // SCALE}", field)
    return units


def amount_out(units: int) -> int | Decimal:
    return units_to_json(units)


DIMENSIONS_MAX = 50
# A dimension number's decimal exponent stays within this: exact, but not a way to make
# every later comparison or sum work on a number with a million digits.
_DIMENSION_EXPONENT_MAX = 1000


def dimensions_in(dimensions: Dimensions | None, field: str) -> Dimensions | None:
    """Dimensions of a usage report, raw event or consumption: at most DIMENSIONS_MAX, each
    value a string, a boolean, an integer or a finite number. Bodies declare them
    `Dimensions` (values untyped), so `decode` turns a JSON number with a fraction into an
    exact Decimal (`0.30000000000000001` stays what was sent), where a typed float would
    have rounded it to the nearest binary fraction."""
    if dimensions is None:
        return None
    if len(dimensions) > DIMENSIONS_MAX:
        raise bad_input(f"at most {DIMENSIONS_MAX} dimensions", field)
    for name, value in dimensions.items():
        if isinstance(value, (str, int)):  # bool is an int
            continue
        if (isinstance(value, Decimal) and value.is_finite()
                and abs(value.adjusted()) <= _DIMENSION_EXPONENT_MAX):
            continue
        raise bad_input(f"{name!r} must be a string, a number or a boolean", field)
    return dimensions


def limit_in(value: int | None, *, default: int = 20, maximum: int = 100) -> int:
    if value is None:
        return default
    if not 1 <= value <= maximum:
        raise bad_input(f"must be between 1 and {maximum}", "limit")
    return value


class PageQuery(msgspec.Struct, frozen=True):
    """`limit`, `after`, `before`: the paging of every list (cursors as the list issued
    them). Handlers take it as `page: PageQuery` (the app provides it, `page_query`)."""

    limit: int
    after: str | None
    before: str | None


def page_query(limit: FromQuery[int | None] = None, after: FromQuery[str | None] = None,
               before: FromQuery[str | None] = None) -> PageQuery:
    return PageQuery(limit_in(limit), after, before)

