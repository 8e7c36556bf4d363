"""The domain layer: each operation the API offers is one function here, taking typed
inputs and returning typed results or raising a typed refusal (`DomainError`). No web
framework: REST handlers (gateway/routes), and next the GraphQL resolvers, the TOML
catalog applier and the CLI, map names and shapes to these functions and back; the rules
live here once.

Below it: the pure core (engine/core: one customer's state machine, no I/O), the runtime
(engine/runtime: actors, group commit through the store) and the store
(persistence/: SQL behind declared methods). Above it: wire modules only.

    errors.py   DomainError (Stigg's error code, a message, the input field), bad_input,
                from_refusal (engine refusals as domain errors)
    context.py  Domain: what an operation reaches (store, runtime, documents, clock)
    stored.py   the catalog's typed documents (customers … plans, promotions)
    constraints.py  bounded input types, checked while a body is decoded
    credits.py     grants, consumption, reservations' release, balances, the ledger
    customers.py   customer profiles
    currencies.py  custom currencies and their top-up prices
    features.py    features, their meters and credit rates
    coupons.py     coupons: discounts and durations
    recharge.py    auto-recharge settings
    analytics.py   credit usage and usage history over time
    promotions.py  promotional entitlements
    packages/      products, plans and add-ons: drafts, versions, entitlements, prices
    subscriptions/ provision, update, cancel, migrate, transfer; catch-up in time; the
                   rules of what a subscription is made of
    entitlements.py  effective entitlements (subscriptions, add-ons, promotions)
    access.py      entitlement checks, the check-and-hold reservation
    usage.py       usage reports, raw events, their cost estimates
    estimates.py   what a subscription or a change would cost
    paywall.py     what a pricing page shows
    values.py      small value rules shared with the store

Webhook endpoints' rules are webhooks.Webhooks' (webhooks/), beside their delivery.
"""
