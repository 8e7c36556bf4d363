"""Constrained input types: msgspec checks these bounds while it decodes a body (REST
bodies, the TOML catalog's items, any wire format that decodes into the domain's inputs),
so a value out of bounds is refused before any rule runs — a 400 naming the field — and
the OpenAPI document shows the bounds (minLength, maxLength, pattern, minimum, maximum).

The domain functions keep their own checks of the same bounds: a caller may build an
input by hand, and a refusal there names the field in the same way. Amounts are Decimals
(exact; msgspec has no numeric bounds for them): their bounds are the domain's
(`values.units_in`)."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta

from engine.billing.pricing import DURATION_MONTHS_MAX

__all__ = ["CURRENCY_ID_MAX", "ID_MAX", "IDEMPOTENCY_KEY_MAX", "PRIORITY_MAX", "QUANTITY_MAX",
           "CurrencyCode", "CurrencyIdent", "IdempotencyKey", "Ident", "ItemsOf", "Months",
           "NonEmpty", "PackageIdent", "Priority", "Quantity", "Reference", "TtlSeconds", "Url"]

ID_MAX = 255
CURRENCY_ID_MAX = 200
IDEMPOTENCY_KEY_MAX = 255  # bytes: the domain checks the UTF-8 length (check_key)
QUANTITY_MAX = 1_000_000
RESERVATION_TTL_S_MAX = 24 * 3600

# A new object's id: it becomes part of paths, so no "/".
Ident = Annotated[str, Meta(min_length=1, max_length=ID_MAX, pattern=r"^[^/]+$",
                            description="1-255 characters without '/'")]
CurrencyIdent = Annotated[str, Meta(min_length=1, max_length=CURRENCY_ID_MAX,
                                    pattern=r"^[^/]+$",
                                    description="1-200 characters without '/'")]
# A product's, plan's or add-on's id: also without surrounding whitespace.
PackageIdent = Annotated[str, Meta(min_length=1, max_length=ID_MAX,
                                   pattern=r"^[^/\s](?:[^/]*[^/\s])?$",
                                   description="1-255 characters without '/' or surrounding "
                                   "spaces")]
NonEmpty = Annotated[str, Meta(min_length=1)]
# An existing object named by id (a customer, a currency, a feature).
Reference = Annotated[str, Meta(min_length=1, max_length=ID_MAX)]
IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=IDEMPOTENCY_KEY_MAX,
                                     description="1-255 bytes")]
CurrencyCode = Annotated[str, Meta(pattern=r"^[A-Za-z]{3}$",
                                   description="an ISO 4217 code: three letters")]
Quantity = Annotated[int, Meta(ge=1, le=QUANTITY_MAX)]
Months = Annotated[int, Meta(ge=1, le=DURATION_MONTHS_MAX)]
TtlSeconds = Annotated[int, Meta(ge=1, le=RESERVATION_TTL_S_MAX)]
PRIORITY_MAX = 100
Priority = Annotated[int, Meta(ge=0, le=PRIORITY_MAX, description="0 (first) to 100")]
Url = Annotated[str, Meta(min_length=1, max_length=2048)]


def ItemsOf(kind: Any, most: int) -> Any:  # noqa: N802 - used as a type
    """A list of 1 to `most` items of `kind` (a batch)."""
    return Annotated[list[kind], Meta(min_length=1, max_length=most,  # type: ignore[valid-type]
                                      description=f"1 to {most} items")]
