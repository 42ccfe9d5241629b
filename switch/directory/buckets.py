"""Anti-enumeration: token buckets that make guessing aliases slow (RULEBOOK §5).

Lookups are rationed per requesting participant and, when the request names one, per
end user. Each requester has a bucket of `size` tokens that refills at
`refill_per_second`, never above `size`. A lookup is admitted only while the bucket
holds at least one token; after it, the bucket is charged by outcome: a found alias
costs `found_cost` (1), a miss `miss_cost` (20). Charging may drive the balance below
zero: that is a debt the refill must repay before the next admission, so a burst of
misses, which is what walking through guessed aliases looks like, locks the requester
out for longer than the burst took. Honest traffic, mostly hits, barely notices.

Time is a float of seconds from any monotonic clock, passed in by the caller; a clock
that steps back refills nothing. A requester whose bucket is full again holds no
memory: a missing bucket is a full one, so `prune` (and an amortised sweep when the
table has doubled since the last) drops them, and memory stays bounded by the
requesters active within the last `size / refill_per_second` seconds or so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

__all__ = ["BucketSettings", "LookupLimiter", "TokenBuckets"]

_MIN_SWEEP: Final = 1024
"""Table size below which charging never sweeps full buckets."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BucketSettings:
    """A bucket's size and refill rate, and what a found alias and a miss cost."""

    size: float
    refill_per_second: float
    found_cost: float = 1
    miss_cost: float = 20

    def __post_init__(self) -> None:
        for name in ("size", "refill_per_second"):
            amount = getattr(self, name)
            if not _finite(amount) or amount <= 0:
                raise ValueError(f"bucket {name} must be a finite number > 0: {amount!r}")
        for name in ("found_cost", "miss_cost"):
            amount = getattr(self, name)
            if not _finite(amount) or amount < 0:
                raise ValueError(f"bucket {name} must be a finite number >= 0: {amount!r}")

    @property
    def full_after(self) -> float:
        """Seconds an empty bucket takes to fill again."""
        return self.size / self.refill_per_second


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


class _Bucket:
    """One requester's balance and when it was last brought up to date."""

    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class TokenBuckets:
    """One token bucket per key, all with the same settings; absent means full."""

    __slots__ = ("_buckets", "_settings", "_sweep_at")

    def __init__(self, settings: BucketSettings) -> None:
        self._settings = settings
        self._buckets: dict[str, _Bucket] = {}
        self._sweep_at = _MIN_SWEEP

    @property
    def settings(self) -> BucketSettings:
        """The settings every bucket here follows."""
        return self._settings

    def __len__(self) -> int:
        """The number of buckets held (those not full at their last update)."""
        return len(self._buckets)

    def _level(self, bucket: _Bucket, now: float) -> float:
        elapsed = now - bucket.at
        if elapsed <= 0:
            return bucket.tokens
        s = self._settings
        return min(s.size, bucket.tokens + elapsed * s.refill_per_second)

    def tokens(self, key: str, now: float) -> float:
        """The tokens `key` holds at `now` (at most `size`; negative while in debt)."""
        _check_time(now)
        bucket = self._buckets.get(key)
        return self._settings.size if bucket is None else self._level(bucket, now)

    def admit(self, key: str, now: float) -> bool:
        """True if `key`'s bucket holds at least one token at `now`; takes nothing."""
        return self.tokens(key, now) >= 1

    def charge(self, key: str, found: bool, now: float) -> None:
        """Take the cost of a lookup's outcome from `key`'s bucket (it may go negative)."""
        _check_time(now)
        s = self._settings
        cost = s.found_cost if found else s.miss_cost
        bucket = self._buckets.get(key)
        level = (s.size if bucket is None else self._level(bucket, now)) - cost
        if level >= s.size:
            self._buckets.pop(key, None)
            return
        if bucket is None:
            self._buckets[key] = _Bucket(level, now)
        else:
            bucket.tokens = level
            bucket.at = max(bucket.at, now)
        if len(self._buckets) >= self._sweep_at:
            self.prune(now)
            self._sweep_at = max(_MIN_SWEEP, 2 * len(self._buckets))

    def prune(self, now: float) -> int:
        """Forget every bucket that is full again at `now`; how many were forgotten."""
        _check_time(now)
        size = self._settings.size
        full = [k for k, b in self._buckets.items() if self._level(b, now) >= size]
        for key in full:
            del self._buckets[key]
        return len(full)


def _check_time(now: float) -> None:
    if not _finite(now):
        raise ValueError(f"a bucket time is a finite number of seconds: {now!r}")


class LookupLimiter:
    """Lookup rationing: a bucket per requesting participant and one per end user.

    `admitted` and `refused` count the lookups `admit` let through and turned away.
    """

    __slots__ = ("admitted", "end_users", "participants", "refused")

    def __init__(self, participant: BucketSettings, end_user: BucketSettings) -> None:
        self.participants = TokenBuckets(participant)
        self.end_users = TokenBuckets(end_user)
        self.admitted = 0
        self.refused = 0

    def admit(self, participant: str, end_user: str | None, now: float) -> bool:
        """True if both the participant's and the end user's bucket admit a lookup at `now`."""
        ok = self.participants.admit(participant, now) and (
            end_user is None or self.end_users.admit(_user_key(participant, end_user), now)
        )
        if ok:
            self.admitted += 1
        else:
            self.refused += 1
        return ok

    def charge(self, participant: str, end_user: str | None, found: bool, now: float) -> None:
        """Charge an admitted lookup's outcome to the participant and the end user."""
        self.participants.charge(participant, found, now)
        if end_user is not None:
            self.end_users.charge(_user_key(participant, end_user), found, now)

    def prune(self, now: float) -> int:
        """Forget every full bucket of both kinds; how many were forgotten."""
        return self.participants.prune(now) + self.end_users.prune(now)


def _user_key(participant: str, end_user: str) -> str:
    """An end user's bucket key: end-user ids are the requesting bank's, so scoped by it."""
    return f"{participant}\x1f{end_user}"
