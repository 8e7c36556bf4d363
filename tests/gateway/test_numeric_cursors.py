"""Ids and cursors the server issues as numbers are read as ASCII digits only.

`str.isdigit()` also accepts digits of other scripts (superscript two, Arabic-Indic three,
fullwidth one), which `int()` refuses or reads as some other number: a webhook delivery id
of `²` answered 500. And a run of digits longer than a 64-bit integer overflowed in the
database. Every such value is read through `gateway.wire.ascii_int` now: a clear 4xx.
"""

from __future__ import annotations

import pytest

from gateway.wire import ascii_int

NOT_OURS = ["²", "٣", "１２", "9" * 25, "", "-1", "1.5"]


def test_ascii_int_reads_ascii_digits_only() -> None:
    assert ascii_int("0") == 0 and ascii_int("123456789012345678") == 123456789012345678
    for text in NOT_OURS:
        assert ascii_int(text) is None, text
    assert ascii_int("1234", digits_max=3) is None


@pytest.fixture
def customer(raw, uid) -> str:
    cust = uid("cust")
    assert raw.post("/api/v1/customers", json={"id": cust}).status_code < 300
    return cust


@pytest.mark.parametrize("value", NOT_OURS[:4])
def test_cursors_and_ids_of_other_digits_are_refused(raw, customer, value) -> None:
    for path, params, status, field in (
        ("/api/v1/credits/ledger", {"customerId": customer, "after": value}, 400, "after"),
        ("/api/v1/customers", {"after": f"{value}.x"}, 400, "after"),
        ("/api/v1/customers", {"before": f"{value}.x"}, 400, "before"),
        ("/api/v1/webhooks/endpoints", {"after": f"{value}.x"}, 400, "after"),
        (f"/api/v1/customers/{customer}/promotional-entitlements", {"after": f"{value}.x"},
         400, "after"),
        ("/api/v1/webhooks/endpoints/nope/deliveries/" + value, {}, 404, None),
    ):
        r = raw.get(path, params=params)
        assert r.status_code == status, (path, params, r.text)
        if field is not None:
            assert r.json()["field"] == field, (path, r.text)
