"""Features over REST: create, retrieve, update, list, archive, unarchive. The rules are
the domain's (engine/domain/features.py); bodies decode straight into its inputs."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, patch, post
from litestar.params import FromPath, FromQuery

from engine.domain import features
from engine.domain.features import FeatureCreate, FeatureUpdate
from engine.domain.stored import Feature
from gateway.context import domain, environment, ok
from gateway.openapi import request_body
from gateway.routes.common import public
from gateway.wire import PageQuery, created_at_bounds, decode_body

__all__ = ["ROUTES"]

_BASE = "/api/v1/features"
def feature_json(doc: Feature) -> dict[str, Any]:
    out = public(doc)
    if doc.credit_rate is not None:  # the rate as a JSON number, exact
        out["creditRate"] = {"amount": doc.credit_rate.amount,
                             "currencyId": doc.credit_rate.currency_id}
    return out


@post(_BASE, opt=request_body(FeatureCreate))
async def create_feature(request: Request) -> Response:
    body = await decode_body(request, FeatureCreate)
    return ok(feature_json(await features.create(domain(request), environment(request), body)))


@get(_BASE + "/{feature_id:str}")
async def retrieve_feature(request: Request, feature_id: FromPath[str]) -> Response:
    return ok(feature_json(await features.require_feature(
        domain(request), environment(request), feature_id, field="id", allow_archived=True)))


@patch(_BASE + "/{feature_id:str}", opt=request_body(FeatureUpdate))
async def update_feature(request: Request, feature_id: FromPath[str]) -> Response:
    body = await decode_body(request, FeatureUpdate)
    return ok(feature_json(await features.update(domain(request), environment(request),
                                                 feature_id, body)))


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


@get(_BASE)
async def list_features(
    request: Request,
    page: PageQuery,
    id: FromQuery[str | None] = None,  # noqa: A002 - the contract's parameter name
) -> Response:
    query = request.query_params
    page = await features.list_features(domain(request), environment(request),
                                        features.FeaturesQuery(
        id=id, limit=page.limit, after=page.after, before=page.before,
        created=tuple(created_at_bounds(request)),
        feature_types=_csv(query.get("featureType")), meter_types=_csv(query.get("meterType")),
        statuses=_csv(query.get("status"))))
    return ok([feature_json(d) for d in page.items],
              pagination={"next": page.next, "prev": page.prev})


@post(_BASE + "/{feature_id:str}/archive")
async def archive_feature(request: Request, feature_id: FromPath[str]) -> Response:
    return ok(feature_json(await features.archive(domain(request), environment(request),
                                                  feature_id, True)))


@post(_BASE + "/{feature_id:str}/unarchive")
async def unarchive_feature(request: Request, feature_id: FromPath[str]) -> Response:
    return ok(feature_json(await features.archive(domain(request), environment(request),
                                                  feature_id, False)))


ROUTES = [create_feature, list_features, retrieve_feature, update_feature, archive_feature,
          unarchive_feature]
