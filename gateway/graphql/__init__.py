"""Stigg's GraphQL API (issue 17): `POST /graphql` and `GET /graphql` for queries.

    schema.py     the served schema: Stigg's own SDL (stigg.graphql, printed from the
                  stigg-api-client package) cut to the root fields creditd resolves;
                  exact amounts (Float as Decimal)
    endpoint.py   the HTTP endpoint: the API key, documents cached parsed and validated,
                  errors in Stigg's shape and codes
    resolvers/    one resolver per root field, a module per area: arguments to a domain
                  function's input, its result to Stigg's output type (the rules are
                  engine/domain's)
"""
