"""The live balance feed over websockets (docs/feed.md): `hub` fans committed effects out
to per-subscriber backlogs, `stream` is the endpoint, `tokens` the customer tokens."""
