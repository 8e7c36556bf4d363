"""Fixtures of the GraphQL tests: a customer and a credit currency made through REST."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def customer(client: Any, uid: Any) -> str:
    cid = uid("gql-cust")
    client.v1.customers.provision(id=cid, name="Acme")
    return cid


@pytest.fixture
def currency(client: Any, uid: Any) -> str:
    cid = uid("gql-tok")
    client.v1.credits.custom_currencies.create(
        id=cid, display_name="AI Tokens", symbol="T",
        units={"singular": "token", "plural": "tokens"})
    return cid
