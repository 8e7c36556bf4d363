"""What the app keeps for the feed (app.state.feed): the hub, the token signer, limits."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.feed.hub import Hub
from gateway.feed.tokens import Tokens

__all__ = ["Feed", "FeedOptions"]


@dataclass(frozen=True)
class FeedOptions:
    subscribers_max: int = 10_000
    customer_subscribers_max: int = 1_000
    backlog_max: int = 1_000  # unsent events per subscriber before it is closed (4409)
    replay_max: int = 10_000  # events a resume may replay; further back is a reset
    heartbeat_s: float = 15.0  # a heartbeat frame after this long without another frame


@dataclass
class Feed:
    hub: Hub
    tokens: Tokens
    options: FeedOptions
