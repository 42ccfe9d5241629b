"""Configuration, resolved once into immutable typed objects.

Precedence, highest first: command-line options, environment (`RTPSWITCH_STORE`,
`RTPSWITCH_CONFIG`), the TOML file (`config/switch.toml` by default), built-in defaults.
Every value is checked here, with an error naming the key, so the rest of the switch
never sees a bad setting.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from switch.core import Money, Participant, ParticipantStatus, SchemeRules
from switch.directory import BucketSettings

DEFAULT_STORE: Final = "sqlite:///rtpswitch.db"
DEFAULT_SERVICE_STORE: Final = "postgresql://postgres@127.0.0.1:5432/rtpswitch"


class SettingsError(ValueError):
    """A configuration value is missing or wrong; the message names the key."""


def config_dir() -> Path:
    """The shipped `config/` directory (source tree or installed package data)."""
    source = Path(__file__).resolve().parents[1] / "config"
    if (source / "switch.toml").is_file():
        return source
    return Path(str(resources.files("switch.config")))


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineSettings:
    """How the engine batches work."""

    batch_size: int = 256
    max_message_bytes: int = 1 << 20
    read_workers: int = 0
    """Processes that read (hash, parse, validate, view) large batches; 0 reads in-line."""
    recent_payments: int = 100_000
    """Final payments kept in memory (with as many message ids, and twice as many hashes
    of inbound messages): what a message refers to beyond them is looked up in the
    store. Memory and start-up time are bounded by this and the payments in flight."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSettings:
    """The switch as a network node (`rtpswitch run`, `rtpswitch simulate`)."""

    store: str = DEFAULT_SERVICE_STORE
    pki_dir: Path = Path("var/pki")
    """The scheme PKI: CA, trust store, the switch's and the participants' credentials."""
    participants: Path | None = None
    """The participants file (default: the shipped `config/demo.toml`)."""
    amqp_host: str = "127.0.0.1"
    amqp_port: int = 5671
    amqp_vhost: str = "rtpswitch"
    participant_api_host: str = "127.0.0.1"
    participant_api_port: int = 8443
    """The participants' alias-directory API (HTTPS, mutual TLS); 0 serves none."""
    api_host: str = "127.0.0.1"
    api_port: int = 0
    """The operator API and dashboard (HTTPS, operator tokens); 0 serves none."""


def _participant_bucket() -> BucketSettings:
    return BucketSettings(size=20_000.0, refill_per_second=2_000.0)


def _end_user_bucket() -> BucketSettings:
    return BucketSettings(size=100.0, refill_per_second=2 / 60)


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectorySettings:
    """The alias directory (RULEBOOK §5): portability and anti-enumeration."""

    claim_period: float = 7 * 86_400.0
    """Seconds an owner has to answer a portability claim before it completes."""
    participant_bucket: BucketSettings = field(default_factory=_participant_bucket)
    """Lookups per requesting participant: a found alias costs 1 token, a miss 20."""
    end_user_bucket: BucketSettings = field(default_factory=_end_user_bucket)
    """Lookups per end user, when the request names one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationsSettings:
    """The operator API: maker-checker and the lines alerts are drawn at."""

    approval_threshold: Decimal | None = Decimal("1000000.00")
    """Funding or defunding more than this needs a second operator (None: never)."""
    approval_ttl: float = 86_400.0
    """Seconds a funding request waits for its second operator before it expires."""
    low_position: Decimal = Decimal("10000.00")
    """An available position under this is low (dashboard warning, alert)."""
    reject_rate_alert: float = 0.25
    timeout_rate_alert: float = 0.05
    queue_depth_alert: int = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchSettings:
    """The batch channel (RULEBOOK §7): the SFTP drop, its files, the business day."""

    root: Path = Path("var/sftp")
    """The participants' trees (`<root>/<PARTICIPANT>/inbox|outbox|archive`)."""
    host: str = "127.0.0.1"
    port: int = 0
    """The SFTP drop's port; 0 serves none (`rtpswitch sftp-bridge --port` overrides)."""
    host_key: Path = Path("var/sftp/host_key")
    authorized_keys: Path = Path("var/sftp/keys")
    """A directory of `<PARTICIPANT>.pub` files: the SSH keys each bank logs in with."""
    max_file_bytes: int = 512 << 20
    """The largest batch file taken (a larger upload is refused)."""
    chunk: int = 512
    """Transactions of a file handed to the engine at a time."""
    rollover_time: str = "00:00"
    """The instant (HH:MM, local to `timezone`) one business day ends and the next begins."""
    timezone: str = "America/New_York"
    statement_delay: float = 10.0
    """Seconds after a rollover before its statements are written: time for the batches
    that were committing at the rollover instant to land in the day they were booked in."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the switch is configured with."""

    scheme: SchemeRules
    response_timeout: float = 5.0
    engine: EngineSettings = field(default_factory=EngineSettings)
    store: str = DEFAULT_STORE
    service: ServiceSettings = field(default_factory=ServiceSettings)
    directory: DirectorySettings = field(default_factory=DirectorySettings)
    operations: OperationsSettings = field(default_factory=OperationsSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoParticipant:
    """A simulated bank of the demo: participant, opening position, account behaviours."""

    participant: Participant
    fund: Decimal
    accounts: dict[str, str]
    names_agents_by: str = "BICFI"


def _get(table: dict[str, Any], key: str, where: str, kind: type, default: Any = None) -> Any:
    value = table.get(key, default)
    if value is None:
        raise SettingsError(f"{where}.{key} is missing")
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind):
        raise SettingsError(f"{where}.{key} must be a {kind.__name__}, not {value!r}")
    return value


def _decimal(text: str, where: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise SettingsError(f"{where} is not a decimal amount: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise SettingsError(f"{where} must be a positive amount: {text!r}")
    return value


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from None


def load_settings(
    path: Path | None = None,
    *,
    store: str | None = None,
    response_timeout: float | None = None,
) -> Settings:
    """Settings from `path` (or RTPSWITCH_CONFIG, or the shipped file) with overrides applied."""
    env_path = os.environ.get("RTPSWITCH_CONFIG")
    file = path or (Path(env_path) if env_path else config_dir() / "switch.toml")
    data = _read(file)
    scheme_t = data.get("scheme", {})
    currency = _get(scheme_t, "currency", "scheme", str, "USD")
    exponent = _get(scheme_t, "exponent", "scheme", int, 2)
    limit = _decimal(_get(scheme_t, "payment_limit", "scheme", str), "scheme.payment_limit")
    try:
        scheme = SchemeRules(
            currency=currency,
            exponent=exponent,
            payment_limit=Money.from_decimal(limit, currency, exponent),
            switch_bicfi=_get(scheme_t, "switch_bicfi", "scheme", str),
            switch_member_id=_get(scheme_t, "switch_member_id", "scheme", str, "000000000"),
        )
    except ValueError as exc:
        raise SettingsError(f"scheme: {exc}") from None
    clearing = data.get("clearing", {})
    timeout = response_timeout
    if timeout is None:
        timeout = _get(clearing, "response_timeout_seconds", "clearing", float, 5.0)
    if timeout <= 0:
        raise SettingsError("clearing.response_timeout_seconds must be positive")
    eng = data.get("engine", {})
    engine = EngineSettings(
        batch_size=_get(eng, "batch_size", "engine", int, 256),
        max_message_bytes=_get(eng, "max_message_bytes", "engine", int, 1 << 20),
        read_workers=_get(eng, "read_workers", "engine", int, 0),
        recent_payments=_get(eng, "recent_payments", "engine", int, 100_000),
    )
    if engine.batch_size < 1:
        raise SettingsError("engine.batch_size must be at least 1")
    if not 0 <= engine.read_workers <= 16:
        raise SettingsError("engine.read_workers must be between 0 and 16")
    if engine.recent_payments < 4 * engine.batch_size:
        raise SettingsError(
            f"engine.recent_payments must be at least 4 x engine.batch_size "
            f"({4 * engine.batch_size}): the batches deciding and committing stay in memory"
        )
    return Settings(
        scheme=scheme,
        response_timeout=timeout,
        engine=engine,
        store=store or os.environ.get("RTPSWITCH_STORE") or DEFAULT_STORE,
        service=_service(data.get("service", {}), file.parent, store),
        directory=_directory(data.get("directory", {})),
        operations=_operations(data.get("operations", {})),
        batch=_batch(data.get("batch", {})),
    )


def _batch(t: dict[str, Any]) -> BatchSettings:
    where = "batch"
    port = _get(t, "port", where, int, 0)
    if not 0 <= port < 65536:
        raise SettingsError(f"{where}.port out of range: {port}")
    max_bytes = _get(t, "max_file_bytes", where, int, 512 << 20)
    if max_bytes < 1024:
        raise SettingsError(f"{where}.max_file_bytes must be at least 1024: {max_bytes}")
    chunk = _get(t, "chunk", where, int, 512)
    if not 1 <= chunk <= 10_000:
        raise SettingsError(f"{where}.chunk must be between 1 and 10000: {chunk}")
    rollover = _get(t, "rollover_time", where, str, "00:00")
    if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", rollover):
        raise SettingsError(f"{where}.rollover_time must be HH:MM (00:00 to 23:59): {rollover!r}")
    tz = _get(t, "timezone", where, str, "America/New_York")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"{where}.timezone is not a known time zone: {tz!r}") from None
    delay = _get(t, "statement_delay", where, float, 10.0)
    if not 0 <= delay <= 3600:
        raise SettingsError(f"{where}.statement_delay must be between 0 and 3600 s: {delay}")
    root = Path(_get(t, "root", where, str, "var/sftp"))
    return BatchSettings(
        root=root,
        host=_get(t, "host", where, str, "127.0.0.1"),
        port=port,
        host_key=Path(_get(t, "host_key", where, str, str(root / "host_key"))),
        authorized_keys=Path(_get(t, "authorized_keys", where, str, str(root / "keys"))),
        max_file_bytes=max_bytes,
        chunk=chunk,
        rollover_time=rollover,
        timezone=tz,
        statement_delay=delay,
    )


def _operations(t: dict[str, Any]) -> OperationsSettings:
    where = "operations"
    threshold = t.get("approval_threshold", "1000000.00")
    if threshold is not None and not isinstance(threshold, str):
        raise SettingsError(f"{where}.approval_threshold must be a string, not {threshold!r}")
    ttl = _get(t, "approval_ttl_seconds", where, float, 86_400.0)
    if ttl <= 0:
        raise SettingsError(f"{where}.approval_ttl_seconds must be positive")
    low = _get(t, "low_position", where, str, "10000.00")
    rates = {}
    for key, default in (("reject_rate_alert", 0.25), ("timeout_rate_alert", 0.05)):
        rates[key] = _get(t, key, where, float, default)
        if not 0 < rates[key] <= 1:
            raise SettingsError(f"{where}.{key} must be in (0, 1]: {rates[key]}")
    depth = _get(t, "queue_depth_alert", where, int, 1000)
    if depth < 1:
        raise SettingsError(f"{where}.queue_depth_alert must be at least 1")
    return OperationsSettings(
        approval_threshold=(
            None
            if threshold in (None, "", "none")
            else _decimal(threshold, f"{where}.approval_threshold")
        ),
        approval_ttl=ttl,
        low_position=_decimal(low, f"{where}.low_position"),
        reject_rate_alert=rates["reject_rate_alert"],
        timeout_rate_alert=rates["timeout_rate_alert"],
        queue_depth_alert=depth,
    )


def _bucket(t: dict[str, Any], prefix: str, default: BucketSettings) -> BucketSettings:
    where = "directory"
    try:
        return BucketSettings(
            size=_get(t, f"{prefix}_bucket_size", where, float, default.size),
            refill_per_second=_get(
                t, f"{prefix}_refill_per_second", where, float, default.refill_per_second
            ),
            found_cost=_get(t, "found_cost", where, float, default.found_cost),
            miss_cost=_get(t, "miss_cost", where, float, default.miss_cost),
        )
    except ValueError as exc:
        raise SettingsError(f"directory.{prefix}_bucket: {exc}") from None


def _directory(t: dict[str, Any]) -> DirectorySettings:
    period = _get(t, "claim_period_seconds", "directory", float, 7 * 86_400.0)
    if period <= 0:
        raise SettingsError("directory.claim_period_seconds must be positive")
    return DirectorySettings(
        claim_period=period,
        participant_bucket=_bucket(t, "participant", _participant_bucket()),
        end_user_bucket=_bucket(t, "end_user", _end_user_bucket()),
    )


def _service(t: dict[str, Any], base: Path, store: str | None) -> ServiceSettings:
    participants = t.get("participants")
    if participants is not None and not isinstance(participants, str):
        raise SettingsError(f"service.participants must be a string, not {participants!r}")
    port = _get(t, "amqp_port", "service", int, 5671)
    if not 0 < port < 65536:
        raise SettingsError(f"service.amqp_port out of range: {port}")
    api_port = _get(t, "participant_api_port", "service", int, 8443)
    if not 0 <= api_port < 65536:
        raise SettingsError(f"service.participant_api_port out of range: {api_port}")
    operator_port = _get(t, "api_port", "service", int, 0)
    if not 0 <= operator_port < 65536:
        raise SettingsError(f"service.api_port out of range: {operator_port}")
    return ServiceSettings(
        api_host=_get(t, "api_host", "service", str, "127.0.0.1"),
        api_port=operator_port,
        store=store
        or os.environ.get("RTPSWITCH_STORE")
        or _get(t, "store", "service", str, DEFAULT_SERVICE_STORE),
        pki_dir=Path(
            os.environ.get("RTPSWITCH_PKI") or _get(t, "pki_dir", "service", str, "var/pki")
        ),
        participants=base / participants if participants else None,
        amqp_host=_get(t, "amqp_host", "service", str, "127.0.0.1"),
        amqp_port=port,
        amqp_vhost=_get(t, "amqp_vhost", "service", str, "rtpswitch"),
        participant_api_host=_get(t, "participant_api_host", "service", str, "127.0.0.1"),
        participant_api_port=api_port,
    )


def load_demo_aliases(path: Path | None = None) -> list[dict[str, str]]:
    """The demo's aliases from `path` (default: `config/demo.toml`), as directory import rows."""
    file = path or config_dir() / "demo.toml"
    rows: list[dict[str, str]] = []
    for i, t in enumerate(_read(file).get("alias", [])):
        where = f"alias[{i}]"
        rows.append(
            {
                key: _get(t, key, where, str, "" if key == "value" else None)
                for key in ("participant", "type", "value", "account", "name")
            }
        )
    return rows


def load_demo_participants(path: Path | None = None, *, exponent: int = 2) -> list[DemoParticipant]:
    """The demo banks from `path` (default: the shipped `config/demo.toml`)."""
    file = path or config_dir() / "demo.toml"
    data = _read(file)
    out: list[DemoParticipant] = []
    for i, t in enumerate(data.get("participant", [])):
        where = f"participant[{i}]"
        try:
            p = Participant(
                id=_get(t, "id", where, str),
                member_id=_get(t, "member_id", where, str),
                name=_get(t, "name", where, str),
                status=ParticipantStatus(t.get("status", "active")),
            )
        except ValueError as exc:
            raise SettingsError(f"{where}: {exc}") from None
        accounts = t.get("accounts", {})
        if not all(isinstance(v, str) for v in accounts.values()):
            raise SettingsError(f"{where}.accounts: every behaviour must be a string")
        named = _get(t, "names_agents_by", where, str, "BICFI")
        if named not in ("BICFI", "USABA"):
            raise SettingsError(f"{where}.names_agents_by must be BICFI or USABA: {named!r}")
        fund = _decimal(_get(t, "fund", where, str), f"{where}.fund")
        out.append(
            DemoParticipant(
                participant=p, fund=fund, accounts=dict(accounts), names_agents_by=named
            )
        )
    if len(out) < 2:
        raise SettingsError(f"{file}: the demo needs at least two participants")
    return out
