"""The wire field names a DomainError gives, translated back to the file's keys (items are
applied through the domain's functions, engine/domain, which name fields as the API
does)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import msgspec

from .keypath import _path_tokens

_unjson = msgspec.json.decode
# Decimals as JSON numbers, as a client sends them (decoded back into Decimals by the route).
_json = msgspec.json.Encoder(decimal_format="number").encode
_decimal_json = msgspec.json.Decoder(float_hook=Decimal).decode


# Wire field names (as an ApiError names them) -> the file's key names, where they differ.
_FILE_NAMES = {"featureUnits": "units", "featureUnitsPlural": "units_plural",
               "featureType": "type", "featureStatus": "status",
               "enumConfiguration": "enum_values", "currencyId": "currency",
               "pricingModels": "prices", "pricePeriods": "periods",
               "billingCountryCode": "country", "featureId": "feature",
               "billingModel": "model", "billingCadence": "cadence",
               "minUnitQuantity": "min_units", "maxUnitQuantity": "max_units",
               "topUpCustomCurrencyId": "top_up", "parentPlanId": "parent",
               "compatibleAddonIds": "compatible_addons", "defaultTrialConfig": "trial",
               "trialEndBehavior": "end_behavior", "hasSoftLimit": "soft_limit",
               "hasUnlimitedUsage": "unlimited", "displayNameOverride": "display_name",
               "hiddenFromWidgets": "hidden_from", "isGranted": "granted",
               "amountsOff": "amounts_off", "percentOff": "percent_off", "price": "amount"}


def _file_path(field_name: str | None) -> list[str | int]:
    if not field_name:
        return []
    out: list[str | int] = []
    for token in _path_tokens(field_name):
        if token.isdigit():
            out.append(int(token))
        else:
            out.append(_FILE_NAMES.get(token, re.sub(r"(?<!^)([A-Z])", r"_\1", token).lower()))
    return out


def _plain(value: Any) -> Any:
    """Decimals as JSON would carry them (the package functions take decoded bodies)."""
    return _decimal_json(_json(value))
