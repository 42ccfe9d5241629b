"""The `[engine]` settings: how much the engine keeps in memory, checked when loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.settings import SettingsError, config_dir, load_settings


def config_with(tmp_path: Path, old: str, new: str) -> Path:
    """The shipped configuration with one line of it replaced."""
    text = (config_dir() / "switch.toml").read_text()
    assert old in text
    path = tmp_path / "switch.toml"
    path.write_text(text.replace(old, new))
    (tmp_path / "demo.toml").write_text((config_dir() / "demo.toml").read_text())
    return path


def test_the_shipped_engine_keeps_a_hundred_thousand_final_payments() -> None:
    assert load_settings().engine.recent_payments == 100_000


def test_recent_payments_is_read_from_the_file(tmp_path: Path) -> None:
    path = config_with(tmp_path, "recent_payments = 100000", "recent_payments = 5000")
    assert load_settings(path).engine.recent_payments == 5000


def test_recent_payments_must_cover_the_batches_in_flight(tmp_path: Path) -> None:
    path = config_with(tmp_path, "recent_payments = 100000", "recent_payments = 1000")
    with pytest.raises(SettingsError, match=r"engine\.recent_payments must be at least .*1024"):
        load_settings(path)
