"""Money: exact minor units, one currency at a time, never float."""

from __future__ import annotations

from decimal import Decimal

import pytest

from switch.core.money import Money, format_minor, is_currency_code, to_minor


def usd(minor: int) -> Money:
    return Money(minor=minor, currency="USD")


def test_from_decimal_is_exact() -> None:
    assert Money.from_decimal(Decimal("1250.00"), "USD") == usd(125000)
    assert Money.from_decimal(Decimal("1250"), "USD") == usd(125000)
    assert Money.from_decimal(Decimal("0.01"), "USD") == usd(1)
    assert Money.from_decimal(Decimal("1E+3"), "USD") == usd(100000)
    # trailing zeros beyond the exponent are not extra decimals
    assert Money.from_decimal(Decimal("10.500"), "USD") == usd(1050)
    assert Money.from_decimal(Decimal("7"), "JPY", exponent=0) == Money(
        minor=7, currency="JPY", exponent=0
    )


def test_from_decimal_is_exact_beyond_context_precision() -> None:
    big = Decimal("12345678901234567890123456789012.34")
    assert Money.from_decimal(big, "USD").minor == 1234567890123456789012345678901234
    with pytest.raises(ValueError, match="more than 2 decimals"):
        Money.from_decimal(Decimal("12345678901234567890123456789012.345"), "USD")


@pytest.mark.parametrize("text", ["0.001", "1.005", "1250.999"])
def test_from_decimal_refuses_more_decimals_than_exponent(text: str) -> None:
    with pytest.raises(ValueError, match=rf"amount {text} has more than 2 decimals for .*USD"):
        Money.from_decimal(Decimal(text), "USD")


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "sNaN"])
def test_from_decimal_refuses_non_finite(text: str) -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        Money.from_decimal(Decimal(text), "USD")


def test_to_minor_refuses_float_and_bad_exponent() -> None:
    with pytest.raises(TypeError):
        to_minor(0.1, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exponent"):
        to_minor(Decimal(1), -1)


@pytest.mark.parametrize("currency", ["usd", "US", "USDD", "U5D", "ÜSD", ""])
def test_currency_must_be_three_upper_letters(currency: str) -> None:
    assert not is_currency_code(currency)
    with pytest.raises(ValueError, match="currency"):
        Money(minor=1, currency=currency)


def test_minor_must_be_int() -> None:
    with pytest.raises(ValueError, match="int"):
        Money(minor=1.5, currency="USD")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="int"):
        Money(minor=True, currency="USD")
    with pytest.raises(ValueError, match="int"):
        Money(minor=Decimal(1), currency="USD")  # type: ignore[arg-type]


def test_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        Money(1, "USD")  # type: ignore[call-arg]
    m = usd(1)
    with pytest.raises(AttributeError):
        m.minor = 2  # type: ignore[misc]


def test_to_decimal_and_str() -> None:
    assert usd(125000).to_decimal() == Decimal("1250.00")
    assert str(usd(125000).to_decimal()) == "1250.00"
    assert str(usd(125000)) == "1250.00 USD"
    assert str(usd(5)) == "0.05 USD"
    assert str(usd(0)) == "0.00 USD"
    assert str(usd(-1)) == "-0.01 USD"
    assert str(Money(minor=7, currency="JPY", exponent=0)) == "7 JPY"
    assert str(usd(10**40 + 1)) == "1" + "0" * 38 + ".01 USD"


def test_round_trip() -> None:
    for minor in (0, 1, 99, 100, 123456789, -42):
        assert Money.from_decimal(usd(minor).to_decimal(), "USD") == usd(minor)


def test_arithmetic_same_currency() -> None:
    assert usd(100) + usd(25) == usd(125)
    assert usd(100) - usd(25) == usd(75)
    assert -usd(5) == usd(-5)
    assert Money.zero("USD") == usd(0)


def test_arithmetic_refuses_mixed_currencies() -> None:
    eur = Money(minor=1, currency="EUR")
    with pytest.raises(ValueError, match="USD and EUR"):
        usd(1) + eur
    with pytest.raises(ValueError, match="USD and EUR"):
        usd(1) - eur
    with pytest.raises(ValueError):
        _ = usd(1) < eur
    with pytest.raises(TypeError):
        usd(1) + 1  # type: ignore[operator]


def test_comparison() -> None:
    assert usd(1) < usd(2) <= usd(2) < usd(3)
    assert usd(3) > usd(2) >= usd(2)
    assert usd(1) != Money(minor=1, currency="EUR")
    assert max(usd(5), usd(7), usd(6)) == usd(7)
    assert len({usd(1), usd(1), usd(2)}) == 2


@pytest.mark.parametrize(
    ("minor", "exponent", "text"),
    [
        (0, 2, "0.00"),
        (5, 2, "0.05"),
        (12345, 2, "123.45"),
        (-5, 2, "-0.05"),
        (-12345, 3, "-12.345"),
        (7, 0, "7"),
        (-7, 0, "-7"),
        (10**17, 2, "1000000000000000.00"),
    ],
)
def test_format_minor_is_exact_and_keeps_the_sign(minor: int, exponent: int, text: str) -> None:
    assert format_minor(minor, exponent) == text
