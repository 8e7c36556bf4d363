"""Subscriptions: what a customer bought, kept up to date with time.

    catch_up.py  a subscription brought to `now` (scheduled changes, status, recurring
                 credits exactly once per window), the scheduler, migrations
    changes.py   what a subscription is made of (plan, billing period, add-ons,
                 quantities, trial) checked against the catalog and applied: one rule for
                 provisioning, updates, scheduled updates, migrations and estimates
"""
