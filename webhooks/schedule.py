"""When a failed delivery is tried again, and when it is given up (dead-lettered).

The wait after the n-th failed attempt is `base * factor**(n-1)`, capped at `cap`, times a
random factor in [1 - jitter, 1 + jitter] so that the backlog of an endpoint that was down
does not come back as one thundering herd. With the defaults (30 s, x3, 12 h cap, 12
attempts, +/-20 %) the waits are

    30 s, 1.5 min, 4.5 min, 13.5 min, 40.5 min, 2 h 1.5 min, 6 h 4.5 min, 12 h, 12 h, 12 h, 12 h

so a delivery is tried 12 times over about 57 hours (2 days 9 hours; 46 to 69 hours with
jitter) before it goes to the dead-letter state, from which it can be replayed.
"""

from __future__ import annotations

import random

import msgspec

__all__ = ["RetryPolicy"]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    base_ms: int = 30_000
    factor: int = 3
    cap_ms: int = 12 * 3_600_000
    attempts_max: int = 12
    jitter: float = 0.2

    def __post_init__(self) -> None:
        assert self.base_ms > 0 and self.factor >= 1 and self.cap_ms >= self.base_ms
        assert self.attempts_max >= 1 and 0 <= self.jitter < 1

    def wait_ms(self, failed_attempts: int) -> int:
        """The wait before the next attempt, without jitter, after `failed_attempts`."""
        assert 1 <= failed_attempts < self.attempts_max
        # Grows geometrically until the cap; the exponent is bounded by attempts_max, but
        # the cap check avoids building huge integers for large factors.
        wait = self.base_ms
        for _ in range(failed_attempts - 1):
            wait *= self.factor
            if wait >= self.cap_ms:
                return self.cap_ms
        return min(wait, self.cap_ms)

    def next_attempt_at(self, now_ms: int, failed_attempts: int,
                        rng: random.Random) -> int | None:
        """When to try again after `failed_attempts` failures; None: give up (dead-letter)."""
        if failed_attempts >= self.attempts_max:
            return None
        wait = self.wait_ms(failed_attempts)
        spread = wait * self.jitter
        return now_ms + max(1, round(wait + rng.uniform(-spread, spread)))

    def table(self) -> list[int]:
        """Every wait of the schedule, without jitter (for docs and tests)."""
        return [self.wait_ms(n) for n in range(1, self.attempts_max)]
