"""The alias overhead figure of `rtpswitch bench --alias-pairs`, from known pairs."""

from __future__ import annotations

import pytest

from switch.cli.bench import alias_overhead


def test_the_overhead_is_the_mean_shortfall_of_the_alias_runs() -> None:
    result = alias_overhead([(1000.0, 950.0), (2000.0, 2020.0), (1500.0, 1380.0)])
    assert result["differences_percent"] == [5.0, -1.0, 8.0]
    assert result["alias_overhead_percent"] == 4.0
    assert result["median_percent"] == 5.0
    assert result["plain_payments_per_second"] == 1500.0
    assert result["alias_payments_per_second"] == 1450.0
    assert result["pairs"] == 3


@pytest.mark.parametrize("pairs", [[], [(0.0, 10.0)], [(10.0, -1.0)]])
def test_pairs_that_say_nothing_are_refused(pairs: list[tuple[float, float]]) -> None:
    with pytest.raises(ValueError, match="at least one pair"):
        alias_overhead(pairs)
