"""Who may do what through the operator API: roles, and the bearer tokens that carry them.

Roles are ordered; each includes the rights of those below it:

=========  ==============================================================
role       may
=========  ==============================================================
viewer     read everything: participants, positions, the journal, payments
           with their messages, conservation, alerts, the audit log, metrics
operator   also suspend and resume participants, fund and defund positions,
           approve or reject another operator's funding request
admin      also onboard participants, set their limits, create and revoke
           operator tokens
=========  ==============================================================

A token is `rtpo_<id>_<secret>`: the id (12 hex digits) names the token in the audit
log and in the token list; the secret (43 URL-safe characters, 256 random bits) is
shown once, when the token is made. The store keeps only the secret's SHA-256, so a
copy of the database lets no one in. Checking a token compares hashes in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "TOKEN_PREFIX",
    "IssuedToken",
    "Role",
    "allows",
    "issue_token",
    "parse_token",
    "secret_matches",
    "secret_sha256",
]

TOKEN_PREFIX: Final = "rtpo_"
_TOKEN: Final = re.compile(r"rtpo_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


class Role(StrEnum):
    """An operator's role; a role includes the rights of the roles before it."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


_RANK: Final = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


def allows(role: Role | str, needed: Role | str) -> bool:
    """True if `role` has the rights of `needed`."""
    return _RANK[Role(role)] >= _RANK[Role(needed)]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token: its id, the text the operator uses, and what the store keeps."""

    id: str
    text: str
    sha256: str


def secret_sha256(secret: str) -> str:
    """What the store keeps of a token's secret."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def issue_token() -> IssuedToken:
    """A new random token."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return IssuedToken(token_id, f"{TOKEN_PREFIX}{token_id}_{secret}", secret_sha256(secret))


def parse_token(text: str) -> tuple[str, str] | None:
    """(id, secret) of a token's text, or None if it is not shaped like one."""
    m = _TOKEN.fullmatch(text)
    return (m.group(1), m.group(2)) if m else None


def secret_matches(secret: str, stored_sha256: str) -> bool:
    """True if `secret` is the one whose hash the store keeps (constant time)."""
    return hmac.compare_digest(secret_sha256(secret), stored_sha256)
