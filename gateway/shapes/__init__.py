"""Stigg's GraphQL object types as JSON dicts, shared by every wire that answers in
GraphQL's names: the GraphQL resolvers, the Edge JSON reads and the REST paywall.

    catalog.py    Plan, Addon, Product, Feature, Price, PackageEntitlement(Union), …
    customers.py  Customer, CustomerSubscription
"""
