"""Money: an exact amount of one currency, in integer minor units.

An amount is stored as an `int` count of minor units (cents for USD) together with its
ISO 4217 currency code and the currency's exponent (the number of decimals of its minor
unit, 2 for USD). Floats never appear: amounts enter from XML as `Decimal` text and are
converted exactly with `to_minor`, which refuses an amount that would need more decimals
than the exponent allows instead of rounding it. Arithmetic and ordering are defined only
between amounts of the same currency; mixing currencies raises `ValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

__all__ = ["MAX_EXPONENT", "Money", "format_minor", "is_currency_code", "to_minor"]

MAX_EXPONENT: Final = 18
"""Largest currency exponent accepted (ISO 4217 uses 0 to 4)."""

_POW10: Final[tuple[int, ...]] = tuple(10**e for e in range(MAX_EXPONENT + 1))


def is_currency_code(code: str) -> bool:
    """True if `code` has the shape of an ISO 4217 alphabetic code (3 upper-case letters)."""
    return len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()


def format_minor(minor: int, exponent: int = 2) -> str:
    """`minor` units as exact decimal text with `exponent` decimals: 12345, 2 -> "123.45"."""
    whole, fraction = divmod(abs(minor), _POW10[exponent])
    sign = "-" if minor < 0 else ""
    return f"{sign}{whole}.{fraction:0{exponent}d}" if exponent else f"{sign}{whole}"


def to_minor(amount: Decimal, exponent: int = 2) -> int:
    """`amount` in exact minor units; ValueError if it is not finite or has too many decimals."""
    if isinstance(amount, float):
        raise TypeError("amounts are never floats")
    if not 0 <= exponent <= MAX_EXPONENT:
        raise ValueError(f"currency exponent must be 0..{MAX_EXPONENT}: {exponent!r}")
    try:
        numerator, denominator = amount.as_integer_ratio()
    except (ValueError, OverflowError):
        raise ValueError(f"amount {amount} is not a finite number") from None
    minor, rest = divmod(numerator * _POW10[exponent], denominator)
    if rest:
        raise ValueError(f"amount {amount} has more than {exponent} decimals")
    return minor


@dataclass(frozen=True, kw_only=True, slots=True)
class Money:
    """An exact amount: `minor` units of `currency`, whose minor unit has `exponent` decimals."""

    minor: int
    currency: str
    exponent: int = 2

    def __post_init__(self) -> None:
        if type(self.minor) is not int:
            raise ValueError(f"money minor units must be an int, not {type(self.minor).__name__}")
        if not (isinstance(self.currency, str) and is_currency_code(self.currency)):
            raise ValueError(f"currency must be 3 upper-case letters: {self.currency!r}")
        if type(self.exponent) is not int or not 0 <= self.exponent <= MAX_EXPONENT:
            raise ValueError(f"currency exponent must be 0..{MAX_EXPONENT}: {self.exponent!r}")

    @classmethod
    def from_decimal(cls, amount: Decimal, currency: str, exponent: int = 2) -> Money:
        """Exact conversion of a decimal amount; ValueError if it has too many decimals."""
        try:
            minor = to_minor(amount, exponent)
        except ValueError as e:
            raise ValueError(f"{e} for currency {currency}") from None
        return cls(minor=minor, currency=currency, exponent=exponent)

    @classmethod
    def zero(cls, currency: str, exponent: int = 2) -> Money:
        """No money of `currency`."""
        return cls(minor=0, currency=currency, exponent=exponent)

    def to_decimal(self) -> Decimal:
        """The amount as an exact Decimal with `exponent` decimals (1250.00, not 1250)."""
        return Decimal(f"{self.minor}E-{self.exponent}")

    def __str__(self) -> str:
        return f"{self.to_decimal():f} {self.currency}"

    def _check(self, other: Money) -> None:
        if self.currency != other.currency or self.exponent != other.exponent:
            raise ValueError(f"cannot combine {self.currency} and {other.currency} amounts")

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._check(other)
        return Money(minor=self.minor + other.minor, currency=self.currency, exponent=self.exponent)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._check(other)
        return Money(minor=self.minor - other.minor, currency=self.currency, exponent=self.exponent)

    def __neg__(self) -> Money:
        return Money(minor=-self.minor, currency=self.currency, exponent=self.exponent)

    def __lt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._check(other)
        return self.minor < other.minor

    def __le__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._check(other)
        return self.minor <= other.minor

    def __gt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._check(other)
        return self.minor > other.minor

    def __ge__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._check(other)
        return self.minor >= other.minor
