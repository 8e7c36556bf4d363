"""Route handlers by area; `ROUTES` is what the app mounts."""

from gateway.feed.stream import ROUTES as _FEED
from gateway.routes.analytics import ROUTES as _ANALYTICS
from gateway.routes.coupons import ROUTES as _COUPONS
from gateway.routes.credits import ROUTES as _CREDITS
from gateway.routes.currencies import ROUTES as _CURRENCIES
from gateway.routes.customers import ROUTES as _CUSTOMERS
from gateway.routes.entitlements import ROUTES as _ENTITLEMENTS
from gateway.routes.estimates import ROUTES as _ESTIMATES
from gateway.routes.exports import ROUTES as _EXPORTS
from gateway.routes.features import ROUTES as _FEATURES
from gateway.routes.paywall import ROUTES as _PAYWALL
from gateway.routes.plans import ROUTES as _PLANS
from gateway.routes.pools import ROUTES as _POOLS
from gateway.routes.products import ROUTES as _PRODUCTS
from gateway.routes.promotions import ROUTES as _PROMOTIONS
from gateway.routes.recharge import ROUTES as _RECHARGE
from gateway.routes.subscriptions import ROUTES as _SUBSCRIPTIONS
from gateway.routes.test_clock import ROUTES as _TEST_CLOCK
from gateway.routes.usage import ROUTES as _USAGE
from gateway.routes.webhooks import ROUTES as _WEBHOOKS

ROUTES = [*_CURRENCIES, *_CUSTOMERS, *_CREDITS, *_ENTITLEMENTS, *_FEATURES, *_USAGE,
          *_ANALYTICS, *_WEBHOOKS, *_FEED, *_RECHARGE,
          *_COUPONS, *_PRODUCTS, *_PLANS, *_TEST_CLOCK, *_PROMOTIONS,
          *_SUBSCRIPTIONS, *_ESTIMATES, *_PAYWALL, *_POOLS, *_EXPORTS]
