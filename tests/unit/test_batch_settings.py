"""The `[batch]` settings: the SFTP drop and the business day, each checked when loaded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from switch.settings import SettingsError, config_dir, load_settings


def config_with(tmp_path: Path, batch_lines: str) -> Path:
    """The shipped configuration with its `[batch]` table's values replaced."""
    text = (config_dir() / "switch.toml").read_text()
    head, _, _ = text.partition("[batch]")
    path = tmp_path / "switch.toml"
    path.write_text(f"{head}[batch]\n{batch_lines}\n")
    for name in ("participants.toml", "demo.toml"):
        if (config_dir() / name).exists():
            (tmp_path / name).write_text((config_dir() / name).read_text())
    return path


def test_the_shipped_business_day_ends_at_midnight_new_york() -> None:
    batch = load_settings().batch
    assert (batch.rollover_time, batch.timezone) == ("00:00", "America/New_York")
    assert batch.statement_delay == 10.0


def test_a_business_day_can_end_in_the_evening_elsewhere(tmp_path: Path) -> None:
    lines = 'rollover_time = "19:00"\ntimezone = "America/Sao_Paulo"\nstatement_delay = 0'
    batch = load_settings(config_with(tmp_path, lines)).batch
    assert (batch.rollover_time, batch.timezone, batch.statement_delay) == (
        "19:00",
        "America/Sao_Paulo",
        0.0,
    )


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('rollover_time = "24:00"', "batch.rollover_time"),
        ('rollover_time = "7pm"', "batch.rollover_time"),
        ('timezone = "Mars/Olympus_Mons"', "batch.timezone"),
        ("statement_delay = -1", "batch.statement_delay"),
        ('statement_delay = "soon"', "batch.statement_delay"),
        ("chunk = 0", "batch.chunk"),
        ("max_file_bytes = 10", "batch.max_file_bytes"),
        ("port = 70000", "batch.port"),
    ],
)
def test_a_bad_batch_setting_is_refused_naming_its_field(
    tmp_path: Path, line: str, field: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(field)):
        load_settings(config_with(tmp_path, line))
