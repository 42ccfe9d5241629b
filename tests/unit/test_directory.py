"""The alias directory's pure core: canonical aliases, claims, decisions, replay, buckets."""

from __future__ import annotations

import itertools
import json
import pickle
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.core.errors import CallerError, InternalError
from switch.directory import (
    CLAIM_TRANSITIONS,
    DIRECTORY_ERROR_CODES,
    FINAL_CLAIM_STATES,
    IMPORT_COLUMNS,
    SYSTEM_ACTOR,
    Action,
    Alias,
    AliasStatus,
    AliasType,
    AlreadyRegistered,
    BucketSettings,
    Change,
    Claim,
    ClaimEvent,
    ClaimState,
    Directory,
    DirectoryError,
    IllegalClaimTransition,
    InvalidAlias,
    LookupLimiter,
    NotOwner,
    TokenBuckets,
    claim_events_from,
    directory_error,
    mask_name,
    new_evp,
    next_claim_state,
    normalize,
    parse_alias_type,
    parse_import,
)

A, B, C = "BNKAUS33XXX", "BNKBUS33XXX", "BNKCUS33XXX"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
V, E, T, K = AliasType.VPA, AliasType.EMAL, AliasType.TELE, AliasType.EVP


def at(seconds: float) -> datetime:
    """T0 plus `seconds`."""
    return T0 + timedelta(seconds=seconds)


def evps(*values: str) -> Callable[[], str]:
    """An EVP source that gives `values` in turn."""
    it = iter(values)
    return lambda: next(it)


EVP1 = "0f8fad5b-d9cb-469f-a165-70867728950e"
EVP2 = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def error_of(call: Callable[[], object]) -> DirectoryError:
    """The DirectoryError `call` raises."""
    with pytest.raises(DirectoryError) as info:
        call()
    return info.value


def register(
    d: Directory, participant: str, kind: AliasType, value: str | None, **kw: str
) -> Change:
    """Register and store an alias in `d` (account and name defaulted)."""
    return d.commit(
        d.register(
            participant=participant,
            kind=kind,
            value=value,
            account=kw.get("account", "ACC-1"),
            name=kw.get("name", "Alice Smith"),
            at=T0,
            evp=evps(kw.get("evp", EVP1)),
        )
    )


# --- normalisation --------------------------------------------------------------------------

GOOD = [
    (V, "alice@banka", "alice@banka"),
    (V, "  Alice.Smith_1-x@BANKA ", "alice.smith_1-x@banka"),
    (V, "a@b2", "a@b2"),
    (V, "x" * 64 + "@" + "p" * 32, "x" * 64 + "@" + "p" * 32),
    (E, " Alice.Smith+pay@Example.COM ", "alice.smith+pay@example.com"),
    (E, "a@b-c.d.example", "a@b-c.d.example"),
    (E, "o'neil@mail.co.uk", "o'neil@mail.co.uk"),
    (T, "+1 (555) 123-4567", "+15551234567"),
    (T, "+44.20.7946.0958", "+442079460958"),
    (T, " +55 11 91234-5678 ", "+5511912345678"),
    (T, "+12345678", "+12345678"),
    (T, "+123456789012345", "+123456789012345"),
    (K, EVP1.upper(), EVP1),
    (K, f" {EVP2} ", EVP2),
]


@pytest.mark.parametrize(("kind", "raw", "canonical"), GOOD)
def test_normalize_gives_the_canonical_form(kind: AliasType, raw: str, canonical: str) -> None:
    assert normalize(kind, raw) == canonical
    assert normalize(kind, canonical) == canonical


BAD = [
    (V, "alice", "exactly one @"),
    (V, "a@b@c", "exactly one @"),
    (V, "@banka", "1 to 64"),
    (V, "x" * 65 + "@banka", "1 to 64"),
    (V, "alice@b", "2 to 32"),
    (V, "alice@" + "p" * 33, "2 to 32"),
    (V, "alice@bank-a", "only letters and digits"),
    (V, "al ice@banka", "only letters, digits"),
    (V, "al+ice@banka", "only letters, digits"),
    (V, ".alice@banka", "start or end with a dot"),
    (V, "alice.@banka", "start or end with a dot"),
    (V, "\u212aelvin@banka", "ASCII"),  # the Kelvin sign lowercases to k: refused, not folded
    (V, "", "exactly one @"),
    (E, "alice", "exactly one @"),
    (E, "a@b@example.com", "exactly one @"),
    (E, "@example.com", "before the @"),
    (E, "a..b@example.com", "before the @"),
    (E, ".a@example.com", "before the @"),
    (E, "a b@example.com", "before the @"),
    (E, "x" * 65 + "@example.com", "before the @"),
    (E, "alice@localhost", "dotted"),
    (E, "alice@-bad.com", "malformed label"),
    (E, "alice@bad-.com", "malformed label"),
    (E, "alice@exa_mple.com", "malformed label"),
    (E, "alice@example..com", "malformed label"),
    (E, "alice@" + "l" * 64 + ".com", "malformed label"),
    (E, "alice@10.0.0.1", "numeric"),
    (E, "a@" + ("l" * 60 + ".") * 5 + "com", "at most 254"),
    (E, "ålice@example.com", "ASCII"),
    (T, "15551234567", "starts with +"),
    (T, "0015551234567", "starts with +"),
    (T, "+1 555 CALL NOW", "separated only by"),
    (T, "++15551234567", "separated only by"),
    (T, "+1/555/1234567", "separated only by"),
    (T, "+\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668", "separated only by"),  # Arabic digits
    (T, "+1234567", "8 to 15 digits"),
    (T, "+1234567890123456", "8 to 15 digits"),
    (T, "+0123456789", "never starts with 0"),
    (T, "+", "separated only by"),
    (K, "not-a-uuid", "UUID version 4"),
    (K, EVP1.replace("-", ""), "UUID version 4"),
    (K, "{" + EVP1 + "}", "UUID version 4"),
    (K, str(uuid.uuid1()), "UUID version 4"),
    (K, EVP1[:19] + "c" + EVP1[20:], "UUID version 4"),  # variant bits not 10xx
]


@pytest.mark.parametrize(("kind", "raw", "says"), BAD)
def test_normalize_refuses_saying_why(kind: AliasType, raw: str, says: str) -> None:
    with pytest.raises(InvalidAlias) as info:
        normalize(kind, raw)
    e = info.value
    assert (e.code, e.field) == ("invalid_alias", "value")
    assert says in e.message
    assert isinstance(e, CallerError)


CANONICAL = {
    V: re.compile(r"[a-z0-9_-]([a-z0-9._-]{0,62}[a-z0-9_-])?@[a-z0-9]{2,32}"),
    E: re.compile(r"[^A-Z\s@]+@[a-z0-9.-]+\.[a-z0-9-]+"),
    T: re.compile(r"\+[1-9][0-9]{7,14}"),
    K: re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"),
}

_case = st.sampled_from([str.lower, str.upper, str.title])
_pad = st.sampled_from(["", " ", "\t", "  "])


@st.composite
def alias_inputs(draw: st.DrawFn) -> tuple[AliasType, str]:
    """Mostly valid, sometimes invalid, user-typed alias values of every kind."""
    kind = draw(st.sampled_from(list(AliasType)))
    if kind is V:
        body = draw(st.from_regex(r"[A-Za-z0-9._-]{1,66}@[A-Za-z0-9]{1,33}", fullmatch=True))
    elif kind is E:
        body = draw(
            st.from_regex(
                r"[A-Za-z0-9.+_'-]{1,66}@([A-Za-z0-9-]{1,64}\.){1,3}[A-Za-z0-9]{1,6}",
                fullmatch=True,
            )
        )
    elif kind is T:
        digits = draw(st.from_regex(r"[0-9]{6,17}", fullmatch=True))
        seps = draw(st.lists(st.sampled_from(" -.()"), min_size=len(digits), max_size=len(digits)))
        body = "+" + "".join(d + s for d, s in zip(digits, seps, strict=True))
    else:
        body = str(
            uuid.UUID(
                int=draw(st.integers(0, 2**128 - 1)), version=draw(st.sampled_from([1, 4, 4, 4]))
            )
        )
        body = draw(_case)(body)
    return kind, draw(_pad) + body + draw(_pad)


@given(alias_inputs())
@settings(max_examples=400)
def test_normalize_is_idempotent_and_canonical(case: tuple[AliasType, str]) -> None:
    kind, raw = case
    try:
        once = normalize(kind, raw)
    except InvalidAlias:
        return
    assert normalize(kind, once) == once
    assert CANONICAL[kind].fullmatch(once), once
    assert once == once.strip()


@given(st.sampled_from(list(AliasType)), st.text(max_size=80))
@settings(max_examples=400)
def test_normalize_of_any_text_is_idempotent_or_refused(kind: AliasType, raw: str) -> None:
    try:
        once = normalize(kind, raw)
    except InvalidAlias as e:
        assert e.code == "invalid_alias"
        return
    assert normalize(kind, once) == once
    assert once.isascii()


def test_normalize_refuses_what_is_not_text() -> None:
    with pytest.raises(InvalidAlias):
        normalize(V, 12345)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "kind"),
    [("VPA", V), ("emal", E), (" Tele ", T), ("evp", K), (AliasType.EVP, K)],
)
def test_parse_alias_type(text: str, kind: AliasType) -> None:
    assert parse_alias_type(text) is kind


def test_parse_alias_type_refuses_unknown() -> None:
    e = error_of(lambda: parse_alias_type("IBAN"))
    assert (e.code, e.field) == ("invalid_alias", "type")
    assert "VPA, EMAL, TELE, EVP" in e.message


# --- EVP generation and name masking ------------------------------------------------------


def test_new_evp_is_a_uuid4_from_the_randomness_source() -> None:
    evp = new_evp(lambda n: bytes(range(n)))
    u = uuid.UUID(evp)
    assert (u.version, u.variant) == (4, uuid.RFC_4122)
    assert evp == normalize(K, evp)
    assert evp == new_evp(lambda n: bytes(range(n)))
    assert new_evp() != new_evp()
    with pytest.raises(ValueError, match="15 bytes"):
        new_evp(lambda n: bytes(n - 1))


@given(st.binary(min_size=16, max_size=16))
def test_every_new_evp_is_canonical(raw: bytes) -> None:
    evp = new_evp(lambda n: raw)
    assert normalize(K, evp) == evp


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("Alice Smith", "A**** S****"),
        ("Bo", "B****"),
        ("  maria  da   silva ", "m**** d**** s****"),
        ("Jean-Luc Picard", "J**** P****"),
        ("(Bob) O'Neil", "B**** O****"),
        ("Ærøskøbing", "Æ****"),
        ("", "****"),
        ("   ", "****"),
        ("- -", "****"),
    ],
)
def test_mask_name(name: str, masked: str) -> None:
    assert mask_name(name) == masked


@given(st.text(max_size=60))
def test_masked_name_never_reveals_lengths(name: str) -> None:
    masked = mask_name(name)
    words = masked.split(" ")
    assert all((len(w) == 5 and w.endswith("****")) or w == "****" for w in words)
    assert len(words) <= max(1, len(name.split()))
    for w in words:
        if w != "****":
            assert w[0] in name


# --- errors ---------------------------------------------------------------------------------


def test_every_code_has_its_class() -> None:
    for code in DIRECTORY_ERROR_CODES:
        e = directory_error(code, "why", field="f")
        assert isinstance(e, DirectoryError)
        assert isinstance(e, CallerError)
        assert (e.code, e.field, e.message) == (code, "f", "why")
        assert type(e) is not DirectoryError
    assert directory_error("not_owner").message == DIRECTORY_ERROR_CODES["not_owner"]
    assert NotOwner().field == "participant"
    assert AlreadyRegistered("x", field="claim").field == "claim"
    with pytest.raises(ValueError, match="unknown directory error code"):
        directory_error("nope")
    with pytest.raises(ValueError, match="unknown directory error code"):
        DirectoryError("nope")


def test_the_spec_codes_are_all_there() -> None:
    assert {
        "invalid_alias",
        "not_owner",
        "duplicate",
        "not_found",
        "evp_not_portable",
        "claim_not_open",
        "claim_exists",
        "same_owner",
        "invalid_account",
        "invalid_name",
    } <= set(DIRECTORY_ERROR_CODES)


@pytest.mark.parametrize("field", [None, "value", "claim"])
def test_errors_survive_pickling(field: str | None) -> None:
    for e in (directory_error("duplicate", "taken", field=field), DirectoryError("not_found")):
        e.field = field
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) or isinstance(back, DirectoryError)
        assert (back.code, back.field, back.message) == (e.code, e.field, e.message)


# --- the alias ------------------------------------------------------------------------------


def alias(**kw: object) -> Alias:
    """An alias of A with any field overridden."""
    fields: dict[str, object] = {
        "kind": V,
        "value": "alice@banka",
        "participant": A,
        "account": "ACC-1",
        "name": "Alice Smith",
        "status": AliasStatus.ACTIVE,
        "version": 0,
        "created_at": T0,
        "updated_at": T0,
    }
    fields.update(kw)
    return Alias(**fields)  # type: ignore[arg-type]


def test_alias_is_frozen_and_keyed() -> None:
    a = alias()
    assert a.key == (V, "alice@banka")
    assert a.active
    assert a.masked_name == "A**** S****"
    with pytest.raises(AttributeError):
        a.name = "x"  # type: ignore[misc]


def test_alias_takes_kind_and_status_as_text() -> None:
    a = alias(kind="EMAL", value="a@b.co", status="inactive")
    assert a.kind is E and a.status is AliasStatus.INACTIVE
    assert not a.active
    with pytest.raises(ValueError):
        alias(kind="IBAN")
    with pytest.raises(ValueError):
        alias(status="gone")


@pytest.mark.parametrize(
    ("override", "code", "field"),
    [
        ({"value": "Alice@banka"}, "invalid_alias", "value"),
        ({"value": "alice"}, "invalid_alias", "value"),
        ({"participant": "BNKAUS33"}, "invalid_participant", "participant"),
        ({"participant": "bank a"}, "invalid_participant", "participant"),
        ({"account": ""}, "invalid_account", "account"),
        ({"account": "x" * 35}, "invalid_account", "account"),
        ({"account": "AC 1"}, "invalid_account", "account"),
        ({"account": "AC_1"}, "invalid_account", "account"),
        ({"name": ""}, "invalid_name", "name"),
        ({"name": "   "}, "invalid_name", "name"),
        ({"name": "x" * 141}, "invalid_name", "name"),
        ({"name": "Alice\nSmith"}, "invalid_name", "name"),
    ],
)
def test_alias_validates_fields(override: dict[str, object], code: str, field: str) -> None:
    e = error_of(lambda: alias(**override))
    assert (e.code, e.field) == (code, field)


def test_alias_accepts_field_limits() -> None:
    alias(account="x" * 34, name="n" * 140)
    alias(account="AB/12-3")


@pytest.mark.parametrize(
    "override",
    [
        {"created_at": datetime(2025, 1, 1)},
        {"updated_at": "2025-01-01T00:00:00Z"},
        {"version": -1},
        {"version": 1.0},
        {"version": True},
    ],
)
def test_alias_refuses_what_only_a_bug_can_make(override: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        alias(**override)


# --- the claim state machine ----------------------------------------------------------------

S, EV = ClaimState, ClaimEvent
LEGAL = [
    (S.OPEN, EV.CONFIRM, S.CONFIRMED),
    (S.OPEN, EV.REJECT, S.REJECTED),
    (S.OPEN, EV.EXPIRE, S.COMPLETED),
    (S.OPEN, EV.CANCEL, S.CANCELLED),
]


def test_claim_table_is_exactly_the_rulebook() -> None:
    assert dict(CLAIM_TRANSITIONS) == {(s, e): t for s, e, t in LEGAL}
    assert frozenset(ClaimState) - FINAL_CLAIM_STATES == {S.OPEN}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(ClaimState, ClaimEvent)))
def test_claim_transitions(state: ClaimState, event: ClaimEvent) -> None:
    legal = {(s, e): t for s, e, t in LEGAL}
    if (state, event) in legal:
        assert next_claim_state(state, event) is legal[state, event]
        assert event in claim_events_from(state)
    else:
        with pytest.raises(IllegalClaimTransition) as info:
            next_claim_state(state, event)
        assert isinstance(info.value, InternalError)
        assert (info.value.state, info.value.event) == (state, event)
        assert event not in claim_events_from(state)


def claim(**kw: object) -> Claim:
    """An open claim by B on A's alice@banka, with any field overridden."""
    fields: dict[str, object] = {
        "id": "claim-1",
        "kind": V,
        "value": "alice@banka",
        "claimant": B,
        "owner": A,
        "account": "B-9",
        "name": "Alice Smith",
        "state": S.OPEN,
        "opened_at": T0,
        "expires_at": T0 + WEEK,
        "closed_at": None,
        "version": 0,
    }
    fields.update(kw)
    return Claim(**fields)  # type: ignore[arg-type]


def test_claim_is_due_and_steps() -> None:
    c = claim(version=3)
    assert c.is_open and c.key == (V, "alice@banka")
    assert not c.is_due(T0 + WEEK - timedelta(microseconds=1))
    assert c.is_due(T0 + WEEK)
    done = c.step(EV.REJECT, at(5))
    assert (done.state, done.closed_at, done.version) == (S.REJECTED, at(5), 0)
    assert not done.is_open and not done.is_due(T0 + 2 * WEEK)
    with pytest.raises(IllegalClaimTransition):
        done.step(EV.CONFIRM, at(6))


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"kind": K, "value": EVP1}, DirectoryError),
        ({"claimant": A}, ValueError),
        ({"expires_at": T0}, ValueError),
        ({"closed_at": T0}, ValueError),
        ({"state": S.CONFIRMED}, ValueError),
        ({"id": ""}, ValueError),
        ({"id": "x" * 65}, ValueError),
        ({"id": " c"}, ValueError),
        ({"value": "ALICE@banka"}, DirectoryError),
        ({"account": "a b"}, DirectoryError),
        ({"opened_at": datetime(2025, 3, 1)}, ValueError),
        ({"version": -1}, ValueError),
    ],
)
def test_claim_validates(override: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        claim(**override)


def test_claim_takes_kind_and_state_as_text() -> None:
    c = claim(kind="VPA", state="cancelled", closed_at=at(1))
    assert c.kind is V and c.state is S.CANCELLED


# --- registration ---------------------------------------------------------------------------


def test_register_decides_without_applying() -> None:
    d = Directory()
    change = d.register(
        participant=A, kind="vpa", value=" Alice@BankA ", account="ACC-1", name=" Alice ", at=T0
    )
    assert len(d) == 0 and d.get(V, "alice@banka") is None
    assert change == Change(
        seq=0,
        at=T0,
        actor=A,
        action=Action.REGISTER,
        alias=alias(name="Alice", account="ACC-1"),
        claim=None,
    )
    stored = d.commit(change)
    assert stored.seq == 1 and stored.alias.version == 1
    assert d.get(V, "ALICE@banka") == stored.alias
    assert d.resolve(V, "alice@banka") == stored.alias
    assert len(d) == 1 and d.last_seq == 1


def test_register_by_operator_records_the_actor() -> None:
    d = Directory()
    change = d.register(
        participant="BNKAUS33",
        kind=T,
        value="+1 555 123 4567",
        account="A1",
        name="Al",
        at=T0,
        actor="operator:jane",
    )
    assert (change.actor, change.alias.participant) == ("operator:jane", A)
    assert change.alias.value == "+15551234567"


def test_register_evp_generates_the_value() -> None:
    d = Directory()
    change = register(d, A, K, None, evp=EVP1.upper())
    assert change.alias.value == EVP1
    e = error_of(
        lambda: d.register(participant=A, kind=K, value=EVP2, account="a", name="n", at=T0)
    )
    assert (e.code, e.field) == ("invalid_alias", "value")
    assert "give no value" in e.message


def test_register_evp_draws_again_on_a_collision() -> None:
    d = Directory()
    register(d, A, K, None, evp=EVP1)
    change = d.register(
        participant=B, kind=K, value=None, account="b", name="n", at=T0, evp=evps(EVP1, EVP2)
    )
    assert change.alias.value == EVP2


def test_register_evp_with_a_broken_source_is_a_bug() -> None:
    d = Directory()
    register(d, A, K, None, evp=EVP1)
    with pytest.raises(InternalError, match="in a row"):
        d.register(
            participant=A, kind=K, value=None, account="a", name="n", at=T0, evp=lambda: EVP1
        )
    with pytest.raises(InternalError, match="malformed"):
        d.register(participant=A, kind=K, value=None, account="a", name="n", at=T0, evp=lambda: "x")


@pytest.mark.parametrize("value", [None, "", "   "])
def test_register_needs_a_value_but_for_evp(value: str | None) -> None:
    d = Directory()
    e = error_of(
        lambda: d.register(participant=A, kind=V, value=value, account="a", name="n", at=T0)
    )
    assert (e.code, e.field) == ("invalid_alias", "value")


def test_register_twice_by_the_same_participant_says_so() -> None:
    d = Directory()
    register(d, A, V, "alice@banka")
    e = error_of(lambda: register(d, A, V, "ALICE@banka"))
    assert (e.code, e.field) == ("duplicate", "value")
    assert "this participant" in e.message


def test_register_never_reveals_another_owner() -> None:
    d = Directory()
    register(d, A, E, "alice@example.com")
    d.commit(d.set_active(participant=A, kind=E, value="alice@example.com", active=False, at=T0))
    e = error_of(lambda: register(d, B, E, "Alice@Example.com"))
    assert (e.code, e.field) == ("duplicate", "value")
    assert "another participant" in e.message
    assert A not in e.message and "ACC" not in e.message and "inactive" not in e.message


def test_register_checks_every_field_before_the_directory() -> None:
    d = Directory()
    register(d, A, V, "alice@banka")
    cases = [
        ({"participant": "nobank"}, "invalid_participant", "participant"),
        ({"kind": "IBAN"}, "invalid_alias", "type"),
        ({"value": "nope"}, "invalid_alias", "value"),
        ({"account": "a b"}, "invalid_account", "account"),
        ({"name": " "}, "invalid_name", "name"),
    ]
    for override, code, field in cases:
        kw: dict[str, object] = {
            "participant": B,
            "kind": V,
            "value": "alice@banka",
            "account": "ACC-1",
            "name": "Alice",
            "at": T0,
        }
        kw.update(override)
        e = error_of(lambda kw=kw: d.register(**kw))  # type: ignore[misc]
        assert (e.code, e.field) == (code, field), override


def test_register_refuses_a_naive_time() -> None:
    d = Directory()
    with pytest.raises(ValueError, match="timezone-aware"):
        d.register(
            participant=A, kind=V, value="a@bb", account="a", name="n", at=datetime(2025, 1, 1)
        )


# --- update, (de)activation, deletion -------------------------------------------------------


def test_update_by_the_owner() -> None:
    d = Directory()
    register(d, A, V, "alice@banka")
    change = d.commit(
        d.update(participant=A, kind=V, value="Alice@banka", account="ACC-2", at=at(60))
    )
    assert change.action is Action.UPDATE and change.prior_version == 1
    a = d.get(V, "alice@banka")
    assert a is not None
    assert (a.account, a.name, a.version, a.created_at, a.updated_at) == (
        "ACC-2",
        "Alice Smith",
        2,
        T0,
        at(60),
    )
    d.commit(d.update(participant=A, kind=V, value="alice@banka", name=" Al S ", at=at(61)))
    assert d.get(V, "alice@banka") == replace(a, name="Al S", version=3, updated_at=at(61))


def test_update_keeps_an_inactive_alias_inactive() -> None:
    d = Directory()
    register(d, A, V, "alice@banka")
    d.commit(d.set_active(participant=A, kind=V, value="alice@banka", active=False, at=T0))
    d.commit(d.update(participant=A, kind=V, value="alice@banka", account="X", at=T0))
    a = d.get(V, "alice@banka")
    assert a is not None and a.status is AliasStatus.INACTIVE and a.account == "X"


def test_update_refusals() -> None:
    d = Directory()
    register(d, A, V, "alice@banka")

    def upd(who: str = A, value: str = "alice@banka", **kw: str) -> Change:
        return d.update(participant=who, kind=V, value=value, at=T0, **kw)

    cases: list[tuple[Callable[[], object], str, str | None]] = [
        (lambda: upd(B, account="X"), "not_owner", "participant"),
        (lambda: upd(value="bob@banka", account="X"), "not_found", "value"),
        (lambda: upd(), "no_change", None),
        (lambda: upd(account="a b"), "invalid_account", "account"),
        (lambda: upd(B, name=""), "invalid_name", "name"),  # fields before ownership
    ]
    for call, code, field in cases:
        e = error_of(call)
        assert (e.code, e.field) == (code, field)
    assert A not in error_of(lambda: upd(B, account="X")).message


def test_activation_decides_resolution() -> None:
    d = Directory()
    register(d, A, T, "+15551234567")
    off = d.commit(
        d.set_active(participant=A, kind=T, value="+1 555 123 4567", active=False, at=T0)
    )
    assert off.action is Action.DEACTIVATE
    assert d.resolve(T, "+15551234567") is None
    assert d.get(T, "+15551234567") == off.alias
    on = d.commit(d.set_active(participant=A, kind=T, value="+15551234567", active=True, at=T0))
    assert on.action is Action.ACTIVATE
    assert d.resolve(T, "+15551234567") == on.alias
    e = error_of(
        lambda: d.set_active(participant=B, kind=T, value="+15551234567", active=False, at=T0)
    )
    assert e.code == "not_owner"


def test_delete_frees_the_value() -> None:
    d = Directory()
    first = register(d, A, V, "alice@banka")
    gone = d.commit(d.delete(participant=A, kind=V, value="alice@banka", at=at(1)))
    assert gone.alias.status is AliasStatus.DELETED
    assert d.get(V, "alice@banka") == gone.alias
    assert d.resolve(V, "alice@banka") is None
    assert len(d) == 0 and d.owned_by(A) == []
    for call in (
        lambda: d.delete(participant=A, kind=V, value="alice@banka", at=T0),
        lambda: d.update(participant=A, kind=V, value="alice@banka", name="x", at=T0),
        lambda: d.set_active(participant=A, kind=V, value="alice@banka", active=True, at=T0),
    ):
        assert error_of(call).code == "not_found"
    again = d.register(participant=B, kind=V, value="alice@banka", account="B1", name="A", at=at(2))
    assert again.prior_version == gone.seq
    stored = d.commit(again)
    assert d.resolve(V, "alice@banka") == stored.alias
    assert stored.alias.created_at == at(2) and first.alias.created_at == T0
    assert d.owned_by(B) == [stored.alias] and d.owned_by(A) == []


def test_delete_by_another_participant_is_refused() -> None:
    d = Directory()
    register(d, A, V, "alice@banka")
    e = error_of(lambda: d.delete(participant=B, kind=V, value="alice@banka", at=T0))
    assert (e.code, e.field) == ("not_owner", "participant")


# --- reads ----------------------------------------------------------------------------------


def test_reads() -> None:
    d = Directory()
    register(d, A, V, "zed@banka")
    register(d, A, E, "a@b.co")
    register(d, B, T, "+4420794609")
    assert [a.value for a in d.owned_by(A)] == ["a@b.co", "zed@banka"]
    assert d.owned_by("BNKAUS33") == d.owned_by(A)
    assert d.owned_by("junk") == [] and d.claims_for("junk") == []
    assert d.get(V, "not an alias") is None and d.resolve("IBAN", "x") is None
    assert d.get("tele", "+44 20 7946 09") is not None
    assert len(d) == 3
    assert {a.value for a in d.iter_aliases()} == {"zed@banka", "a@b.co", "+4420794609"}


# --- claims ---------------------------------------------------------------------------------


def claimed(period: timedelta = WEEK) -> tuple[Directory, Change]:
    """A directory where A owns alice@banka and B has claimed it (claim-1)."""
    d = Directory()
    register(d, A, V, "alice@banka")
    change = d.commit(
        d.claim(
            claimant=B,
            kind=V,
            value="Alice@BankA",
            account="B-9",
            name="Alice S",
            at=T0,
            period=period,
            claim_id="claim-1",
        )
    )
    return d, change


def test_claim_opens() -> None:
    d, change = claimed()
    assert change.action is Action.CLAIM and change.actor == B and change.prior_version == 1
    c = change.claim
    assert c is not None
    assert (c.state, c.claimant, c.owner, c.account, c.name, c.version) == (
        S.OPEN,
        B,
        A,
        "B-9",
        "Alice S",
        2,
    )
    assert (c.opened_at, c.expires_at) == (T0, T0 + WEEK)
    a = d.get(V, "alice@banka")
    assert a is not None and a.participant == A and a.version == 2 and a.updated_at == T0
    assert d.open_claim(V, "ALICE@banka") == c == d.get_claim("claim-1")
    assert d.claims_for(A) == d.claims_for(B) == [c] and d.claims_for(C) == []
    assert d.resolve(V, "alice@banka") == a  # still routes to the owner meanwhile


def test_confirm_moves_the_alias_now() -> None:
    d, _ = claimed()
    change = d.commit(d.confirm(owner=A, claim_id="claim-1", at=at(3600)))
    assert change.action is Action.CONFIRM and change.actor == A
    a = d.resolve(V, "alice@banka")
    assert a == change.alias
    assert a is not None
    assert (a.participant, a.account, a.name, a.status, a.updated_at) == (
        B,
        "B-9",
        "Alice S",
        AliasStatus.ACTIVE,
        at(3600),
    )
    assert change.claim is not None and change.claim.state is S.CONFIRMED
    assert change.claim.closed_at == at(3600)
    assert d.open_claim(V, "alice@banka") is None
    assert d.owned_by(A) == [] and d.owned_by(B) == [a]
    assert d.due_claims(T0 + 2 * WEEK) == []


def test_confirm_moves_an_inactive_alias_and_activates_it() -> None:
    d, _ = claimed()
    d.commit(d.set_active(participant=A, kind=V, value="alice@banka", active=False, at=at(1)))
    d.commit(d.confirm(owner=A, claim_id="claim-1", at=at(2)))
    a = d.resolve(V, "alice@banka")
    assert a is not None and a.participant == B


@pytest.mark.parametrize("how", ["reject", "cancel"])
def test_reject_or_cancel_keeps_the_alias(how: str) -> None:
    d, _ = claimed()
    before = d.get(V, "alice@banka")
    if how == "reject":
        change = d.commit(d.reject(owner=A, claim_id="claim-1", at=at(5)))
        state = S.REJECTED
    else:
        change = d.commit(d.cancel(claimant=B, claim_id="claim-1", at=at(5)))
        state = S.CANCELLED
    assert change.claim is not None and change.claim.state is state
    assert before is not None and d.get(V, "alice@banka") == replace(before, version=change.seq)
    assert d.open_claim(V, "alice@banka") is None
    # and a new claim may be opened afterwards
    d.claim(
        claimant=C,
        kind=V,
        value="alice@banka",
        account="c",
        name="n",
        at=at(6),
        period=WEEK,
        claim_id="claim-2",
    )


def test_expire_completes_only_when_due() -> None:
    d, _ = claimed()
    e = error_of(lambda: d.expire(claim_id="claim-1", at=T0 + WEEK - timedelta(seconds=1)))
    assert (e.code, e.field) == ("claim_not_due", "claim")
    c = d.get_claim("claim-1")
    assert d.due_claims(T0 + WEEK) == [c]
    change = d.commit(d.expire(claim_id="claim-1", at=T0 + WEEK))
    assert (change.action, change.actor) == (Action.COMPLETE, SYSTEM_ACTOR)
    assert change.claim is not None and change.claim.state is S.COMPLETED
    a = d.resolve(V, "alice@banka")
    assert a is not None and (a.participant, a.account) == (B, "B-9")
    assert d.due_claims(T0 + 2 * WEEK) == []
    e = error_of(lambda: d.expire(claim_id="claim-1", at=T0 + 2 * WEEK))
    assert e.code == "claim_not_open"


def test_answers_after_the_period_are_refused() -> None:
    d, _ = claimed()
    end = T0 + WEEK
    for call in (
        lambda: d.confirm(owner=A, claim_id="claim-1", at=end),
        lambda: d.reject(owner=A, claim_id="claim-1", at=end),
        lambda: d.cancel(claimant=B, claim_id="claim-1", at=end),
    ):
        e = error_of(call)
        assert (e.code, e.field) == ("claim_not_open", "claim")
        assert "completes" in e.message


def test_closed_claims_take_no_answer() -> None:
    d, _ = claimed()
    d.commit(d.reject(owner=A, claim_id="claim-1", at=at(1)))
    for call in (
        lambda: d.confirm(owner=A, claim_id="claim-1", at=at(2)),
        lambda: d.reject(owner=A, claim_id="claim-1", at=at(2)),
        lambda: d.cancel(claimant=B, claim_id="claim-1", at=at(2)),
        lambda: d.expire(claim_id="claim-1", at=T0 + 2 * WEEK),
    ):
        e = error_of(call)
        assert e.code == "claim_not_open" and "rejected" in e.message


def test_only_the_parties_answer() -> None:
    d, _ = claimed()
    cases: list[tuple[Callable[[], object], str, str]] = [
        (lambda: d.confirm(owner=B, claim_id="claim-1", at=at(1)), "not_owner", "participant"),
        (lambda: d.reject(owner=C, claim_id="claim-1", at=at(1)), "not_owner", "participant"),
        (lambda: d.cancel(claimant=A, claim_id="claim-1", at=at(1)), "not_owner", "participant"),
        (lambda: d.confirm(owner=A, claim_id="claim-9", at=at(1)), "not_found", "claim"),
        (lambda: d.expire(claim_id="claim-9", at=at(1)), "not_found", "claim"),
    ]
    for call, code, field in cases:
        e = error_of(call)
        assert (e.code, e.field) == (code, field)


def test_claim_refusals() -> None:
    d, _ = claimed()
    register(d, A, K, None, evp=EVP1)
    register(d, A, E, "gone@b.co")
    d.commit(d.delete(participant=A, kind=E, value="gone@b.co", at=T0))

    def open_claim(
        who: str = C, kind: AliasType = V, value: str = "alice@banka", **kw: object
    ) -> Change:
        args: dict[str, object] = {
            "claimant": who,
            "kind": kind,
            "value": value,
            "account": "c-1",
            "name": "n",
            "at": T0,
            "period": WEEK,
            "claim_id": "claim-2",
        }
        args.update(kw)
        return d.claim(**args)  # type: ignore[arg-type]

    cases: list[tuple[Callable[[], object], str, str | None]] = [
        (lambda: open_claim(kind=K, value=EVP1), "evp_not_portable", "type"),
        (lambda: open_claim(kind=K, value="junk"), "evp_not_portable", "type"),
        (lambda: open_claim(A), "same_owner", "participant"),
        (lambda: open_claim(), "claim_exists", "value"),
        (lambda: open_claim(value="bob@banka"), "not_found", "value"),
        (lambda: open_claim(kind=E, value="gone@b.co"), "not_found", "value"),
        (lambda: open_claim(value="bad"), "invalid_alias", "value"),
        (lambda: open_claim(account=""), "invalid_account", "account"),
        (lambda: open_claim(name=""), "invalid_name", "name"),
        (lambda: open_claim(kind=E, value="new@b.co"), "not_found", "value"),
    ]
    for call, code, field in cases:
        e = error_of(call)
        assert (e.code, e.field) == (code, field), (code, e.message)
    assert A not in error_of(lambda: open_claim()).message
    with pytest.raises(ValueError, match="period"):
        open_claim(period=timedelta(0))
    with pytest.raises(ValueError, match="claim id"):
        open_claim(claim_id="")


def test_claim_ids_are_never_reused() -> None:
    d, _ = claimed()
    d.commit(d.cancel(claimant=B, claim_id="claim-1", at=at(1)))
    e = error_of(
        lambda: d.claim(
            claimant=C,
            kind=V,
            value="alice@banka",
            account="c",
            name="n",
            at=at(2),
            period=WEEK,
            claim_id="claim-1",
        )
    )
    assert (e.code, e.field) == ("duplicate", "claim")


def test_an_open_claim_blocks_deletion() -> None:
    d, _ = claimed()
    e = error_of(lambda: d.delete(participant=A, kind=V, value="alice@banka", at=at(1)))
    assert (e.code, e.field) == ("claim_exists", "value")
    d.commit(d.reject(owner=A, claim_id="claim-1", at=at(2)))
    d.commit(d.delete(participant=A, kind=V, value="alice@banka", at=at(3)))


def test_due_claims_earliest_first() -> None:
    d = Directory()
    for i, value in enumerate(["a@bank", "b@bank", "c@bank"]):
        register(d, A, V, value)
        d.commit(
            d.claim(
                claimant=B,
                kind=V,
                value=value,
                account="b",
                name="n",
                at=T0,
                period=timedelta(hours=3 - i),
                claim_id=f"c{i}",
            )
        )
    assert [c.id for c in d.due_claims(T0 + timedelta(hours=2))] == ["c2", "c1"]
    assert [c.id for c in d.due_claims(T0 + timedelta(hours=9))] == ["c2", "c1", "c0"]
    assert d.due_claims(T0) == []
    with pytest.raises(ValueError):
        d.due_claims(datetime(2025, 1, 1))


# --- changes and apply ----------------------------------------------------------------------


def test_stored_numbers_the_change_and_its_objects() -> None:
    _, change = claimed()
    assert change.claim is not None
    again = replace(
        change,
        seq=0,
        alias=replace(change.alias, version=0),
        claim=replace(change.claim, version=0),
    )
    assert again.stored(2) == change
    with pytest.raises(ValueError):
        change.stored(0)


def test_change_validates_its_shape() -> None:
    _, change = claimed()
    a, c = change.alias, change.claim
    assert c is not None
    bad: list[Callable[[], object]] = [
        lambda: replace(change, seq=3),  # versions are not the seq
        lambda: replace(change, action="register"),  # register carries no claim
        lambda: replace(change, action="confirm"),  # claim state and holder disagree
        lambda: replace(change, claim=None),
        lambda: replace(change, action="fly"),
        lambda: replace(change, actor=""),
        lambda: replace(change, actor=" x"),
        lambda: replace(change, at=datetime(2025, 1, 1)),
        lambda: replace(change, prior_version=2),
        lambda: replace(change, seq=-1),
        lambda: Change(
            seq=0, at=T0, actor=A, action="delete", alias=replace(a, version=0), claim=None
        ),
        lambda: replace(change, alias=replace(a, value="bob@banka")),
    ]
    for make in bad:
        with pytest.raises(ValueError):
            make()
    assert replace(change, action="claim").action is Action.CLAIM


def test_apply_is_idempotent_and_ignores_older_changes() -> None:
    d = Directory()
    first = register(d, A, V, "alice@banka")
    second = d.commit(d.update(participant=A, kind=V, value="alice@banka", name="Al", at=at(1)))
    for change in (first, second, first):
        d.apply(change)
    assert d.get(V, "alice@banka") == second.alias
    assert len(d) == 1 and d.last_seq == 2


def test_apply_refuses_an_unstored_change() -> None:
    d = Directory()
    change = d.register(participant=A, kind=V, value="a@bb", account="a", name="n", at=T0)
    with pytest.raises(InternalError, match="stored"):
        d.apply(change)


def test_directory_from_a_snapshot() -> None:
    d, _ = claimed()
    copy = Directory(d.iter_aliases(), d.iter_claims())
    assert copy.open_claim(V, "alice@banka") == d.open_claim(V, "alice@banka")
    assert copy.last_seq == d.last_seq == 2
    assert len(copy) == 1
    with pytest.raises(ValueError, match="twice"):
        Directory([*d.iter_aliases(), *d.iter_aliases()])
    with pytest.raises(ValueError, match="twice"):
        Directory(d.iter_aliases(), [*d.iter_claims(), *d.iter_claims()])
    other = replace(claim(), id="claim-2", claimant=C)
    with pytest.raises(ValueError, match="two open claims"):
        Directory(d.iter_aliases(), [*d.iter_claims(), other])


def state_of(d: Directory) -> tuple[object, ...]:
    """Everything a directory's reads can show, for comparing two directories."""
    aliases = sorted(d.iter_aliases(), key=lambda a: a.key)
    claims = sorted(d.iter_claims(), key=lambda c: c.id)
    opened = sorted((c.key, c.id) for c in claims if d.open_claim(*c.key) == c)
    owners = {p: d.owned_by(p) for p in (A, B, C)}
    parties = {p: d.claims_for(p) for p in (A, B, C)}
    return aliases, claims, opened, owners, parties, len(d), d.last_seq


Op = tuple[str, str, tuple[AliasType, str | None], int]
"""A request: what, by whom ("right" party or "wrong"), which alias, hours before it."""

REQUESTS = ["register", "update", "off", "on", "delete", "claim"] * 2 + [
    "confirm",
    "reject",
    "cancel",
    "expire",
]
ALIASES: list[tuple[AliasType, str | None]] = [(V, "a@bank"), (E, "c@d.co"), (K, None)]


def random_ops(rnd: random.Random, n: int) -> list[Op]:
    """`n` random requests: what, by the party who may or by another, which alias, hours before."""
    return [
        (
            rnd.choice(REQUESTS),
            "right" if rnd.random() < 0.75 else "wrong",
            rnd.choice(ALIASES),
            rnd.choice([0, 0, 1, 12, 72]),
        )
        for _ in range(n)
    ]


def decide(d: Directory, op: Op, clock: datetime, claim_id: str, evp: Callable[[], str]) -> Change:
    """The change `op` asks of `d` at `clock` (or the DirectoryError it is refused with)."""
    name, party, (kind, value), _ = op
    if value is None:  # an EVP: the live one, if any
        value = next((a.value for a in d.iter_aliases() if a.kind is K and a.active), EVP1)
    alias = d.get(kind, value)
    owner = alias.participant if alias is not None else A
    other = B if owner == A else A
    open_ = d.open_claim(kind, value)
    open_id = open_.id if open_ is not None else "none"
    claimant = open_.claimant if open_ is not None else other
    right = {"claim": other, "cancel": claimant}.get(name, owner)
    who = right if party == "right" else (B if right == A else A)
    if name == "register":
        return d.register(
            participant=who,
            kind=kind,
            value=None if kind is K else value,
            account="AC1",
            name="N",
            at=clock,
            evp=evp,
        )
    if name == "update":
        return d.update(participant=who, kind=kind, value=value, account="AC2", at=clock)
    if name in ("on", "off"):
        return d.set_active(participant=who, kind=kind, value=value, active=name == "on", at=clock)
    if name == "delete":
        return d.delete(participant=who, kind=kind, value=value, at=clock)
    if name == "claim":
        return d.claim(
            claimant=who,
            kind=kind,
            value=value,
            account="CL1",
            name="M",
            at=clock,
            period=timedelta(days=2),
            claim_id=claim_id,
        )
    if name == "confirm":
        return d.confirm(owner=who, claim_id=open_id, at=clock)
    if name == "reject":
        return d.reject(owner=who, claim_id=open_id, at=clock)
    if name == "cancel":
        return d.cancel(claimant=who, claim_id=open_id, at=clock)
    return d.expire(claim_id=open_id, at=clock)


def run(ops: list[Op]) -> tuple[Directory, list[Change]]:
    """Play `ops` on a directory, storing what is decided and skipping what is refused."""
    d = Directory()
    history: list[Change] = []
    clock = T0
    evp_pool = iter([str(uuid.UUID(int=i, version=4)) for i in range(1, 1000)])
    for op in ops:
        clock += timedelta(hours=op[3])
        before = state_of(d)
        try:
            change = decide(d, op, clock, f"c{len(history)}", lambda: next(evp_pool))
        except DirectoryError:
            continue
        finally:
            assert state_of(d) == before  # deciding changes nothing
        history.append(d.commit(change))
    return d, history


@given(st.randoms(use_true_random=False), st.integers(1, 150))
@settings(max_examples=150, deadline=None)
def test_replay_in_any_order_rebuilds_the_directory(rnd: random.Random, steps: int) -> None:
    d, history = run(random_ops(rnd, steps))
    assert [c.seq for c in history] == list(range(1, len(history) + 1))
    # invariants of the directory as played
    for a in d.iter_aliases():
        if a.status is not AliasStatus.DELETED:
            assert a in d.owned_by(a.participant)
        open_ = d.open_claim(*a.key)
        if open_ is not None:
            assert open_.owner == a.participant and a.status is not AliasStatus.DELETED
    assert len(d) == sum(len(d.owned_by(p)) for p in (A, B, C))
    # replaying the history, in order, twice, or shuffled, gives the same directory
    in_order = Directory()
    for change in history + history:
        in_order.apply(change)
    assert state_of(in_order) == state_of(d)
    shuffled = history[:]
    rnd.shuffle(shuffled)
    mixed = Directory()
    for change in shuffled:
        mixed.apply(change)
    assert state_of(mixed) == state_of(d)


# --- bulk import ----------------------------------------------------------------------------

CSV = b"""\xef\xbb\xbfParticipant, Type ,value,account,name
BNKAUS33XXX,VPA,Alice@BankA,ACC-1,Alice Smith

BNKAUS33XXX,EVP,,ACC-2,"Smith, Alice"
BNKBUS33XXX,TELE,+1 555 123 4567,B-1,Bob
"""


def test_parse_csv() -> None:
    rows = parse_import(CSV, "csv")
    assert rows == [
        {
            "participant": A,
            "type": "VPA",
            "value": "Alice@BankA",
            "account": "ACC-1",
            "name": "Alice Smith",
        },
        {"participant": A, "type": "EVP", "value": "", "account": "ACC-2", "name": "Smith, Alice"},
        {
            "participant": B,
            "type": "TELE",
            "value": "+1 555 123 4567",
            "account": "B-1",
            "name": "Bob",
        },
    ]


def test_parse_json() -> None:
    doc = [
        {"participant": A, "type": "VPA", "value": "a@bank", "account": "1", "name": "A"},
        {"participant": A, "type": "EVP", "value": None, "account": "1", "name": "A"},
        {"participant": A, "type": "EVP", "account": "1", "name": "A"},
    ]
    rows = parse_import(json.dumps(doc).encode(), "json")
    assert [r["value"] for r in rows] == ["a@bank", "", ""]
    assert parse_import(b"[]", "json") == []


@pytest.mark.parametrize(
    ("data", "fmt", "says", "field"),
    [
        (b"", "csv", "empty", None),
        (b"\n\n", "csv", "empty", None),
        (b"participant,type,value,account\n", "csv", "lacks the column(s) name", "name"),
        (b"participant,type,value,account,name,iban\n", "csv", "unknown column 'iban'", "iban"),
        (b"participant,type,value,account,name,name\n", "csv", "column 'name' twice", "name"),
        (
            b"participant,type,value,account,name\nA,VPA,a@bb,1\n",
            "csv",
            "row 1 (line 2) has 4 fields",
            None,
        ),
        (b'participant,type,value,account,name\nA,VPA,"a@bb,1,n\n', "csv", "line", None),
        (b"participant,type\xff", "csv", "not UTF-8", None),
        (b"{", "json", "not JSON", None),
        (b'{"rows": []}', "json", "array of objects, not an object", None),
        (b"[1]", "json", "row 1 is a number", None),
        (b'[{"participant": "A"}]', "json", "row 1 lacks 'type'", "type"),
        (
            b'[{"participant":"A","type":"VPA","value":"v","account":1,"name":"n"}]',
            "json",
            "'account' must be a string, not a number",
            "account",
        ),
        (
            b'[{"participant":"A","type":"VPA","value":"v","account":"1","name":"n","x":1}]',
            "json",
            "unknown key 'x'",
            "x",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "json", "JSON", None),
    ],
)
def test_parse_import_refuses_malformed_files(
    data: bytes, fmt: str, says: str, field: str | None
) -> None:
    e = error_of(lambda: parse_import(data, fmt))  # type: ignore[arg-type]
    assert e.code == "invalid_file"
    assert says in e.message
    assert e.field == field


def test_parse_import_bounds_rows() -> None:
    line = b"BNKAUS33XXX,VPA,a@bb,1,n\n"
    data = b"participant,type,value,account,name\n" + line * 3
    assert len(parse_import(data, "csv", max_rows=3)) == 3
    assert "more than 2 rows" in error_of(lambda: parse_import(data, "csv", max_rows=2)).message
    doc = json.dumps([dict.fromkeys(IMPORT_COLUMNS, "x")] * 3)
    assert (
        "more than 2 rows"
        in error_of(lambda: parse_import(doc.encode(), "json", max_rows=2)).message
    )


def test_parse_import_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError):
        parse_import(b"", "xml")  # type: ignore[arg-type]


def test_import_rows_decides_each_row_against_the_earlier_ones() -> None:
    d = Directory()
    register(d, B, V, "taken@bankb")
    rows = [
        *parse_import(CSV, "csv"),
        {"participant": C, "type": "vpa", "value": "ALICE@banka", "account": "C1", "name": "Al"},
        {"participant": C, "type": "vpa", "value": "taken@bankb", "account": "C1", "name": "Al"},
        {"participant": C, "type": "IBAN", "value": "x", "account": "C1", "name": "Al"},
        {"participant": "", "type": "VPA", "value": "x@bank", "account": "C1", "name": "Al"},
        {"participant": C, "type": "VPA", "value": "x@bank", "account": "C 1", "name": "Al"},
        {"participant": C, "type": "EVP", "value": EVP1, "account": "C1", "name": "Al"},
        {"participant": C, "type": "VPA", "value": "y@bank", "name": "Al"},
        {"participant": C, "type": "VPA", "value": "z@bank", "account": "C1", "name": "Zed"},
    ]
    report = d.import_rows(rows, at=T0, actor="operator:jane", evp=evps(EVP1, EVP2))
    assert len(d) == 1  # nothing applied
    assert [r.row for r in report.rows] == list(range(1, 12))
    assert [r.ok for r in report.rows] == [True, True, True] + [False] * 7 + [True]
    assert not report.ok
    assert [(r.code, r.field) for r in report.errors] == [
        ("duplicate", "value"),
        ("duplicate", "value"),
        ("invalid_alias", "type"),
        ("invalid_participant", "participant"),
        ("invalid_account", "account"),
        ("invalid_alias", "value"),
        ("invalid_account", "account"),
    ]
    assert "row 1 of this import" in (report.errors[0].message or "")
    assert B not in (report.errors[1].message or "")
    changes = report.changes
    assert [c.alias.value for c in changes] == ["alice@banka", EVP1, "+15551234567", "z@bank"]
    assert {c.actor for c in changes} == {"operator:jane"}
    assert changes[1].alias.name == "Smith, Alice"
    for change in changes:
        d.commit(change)
    assert len(d) == 5 and d.resolve(K, EVP1) is not None


def test_import_rows_never_gives_a_taken_evp() -> None:
    d = Directory()
    register(d, A, K, None, evp=EVP1)
    rows = [{"participant": A, "type": "EVP", "value": "", "account": "1", "name": "n"}] * 2
    report = d.import_rows(
        rows,
        at=T0,
        actor="operator:jane",
        evp=evps(EVP1, EVP2, EVP2, EVP1, "11111111-1111-4111-8111-111111111111"),
    )
    assert report.ok
    assert [c.alias.value for c in report.changes] == [EVP2, "11111111-1111-4111-8111-111111111111"]


def test_import_rows_needs_an_actor_and_an_aware_time() -> None:
    d = Directory()
    with pytest.raises(ValueError):
        d.import_rows([], at=T0, actor="")
    with pytest.raises(ValueError):
        d.import_rows([], at=datetime(2025, 1, 1), actor="operator:x")
    assert d.import_rows([], at=T0, actor="operator:x").ok


# --- token buckets --------------------------------------------------------------------------

TEN = BucketSettings(size=20, refill_per_second=1)


@pytest.mark.parametrize(
    "kw",
    [
        {"size": 0, "refill_per_second": 1},
        {"size": 1, "refill_per_second": 0},
        {"size": float("inf"), "refill_per_second": 1},
        {"size": float("nan"), "refill_per_second": 1},
        {"size": 1, "refill_per_second": 1, "miss_cost": -1},
        {"size": True, "refill_per_second": 1},
    ],
)
def test_bucket_settings_validate(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BucketSettings(**kw)


def test_bucket_starts_full_and_a_miss_empties_it() -> None:
    b = TokenBuckets(TEN)
    assert b.admit("k", 0) and b.tokens("k", 0) == 20 and len(b) == 0
    b.charge("k", found=False, now=0)
    assert b.tokens("k", 0) == 0 and not b.admit("k", 0)
    assert not b.admit("k", 0.99)
    assert b.admit("k", 1.0)
    assert b.tokens("k", 100) == 20
    assert TEN.full_after == 20


def test_a_burst_of_misses_is_a_debt() -> None:
    b = TokenBuckets(TEN)
    for _ in range(3):
        b.charge("k", found=False, now=0)
    assert b.tokens("k", 0) == -40
    assert not b.admit("k", 40.5)
    assert b.admit("k", 41)


def test_found_keys_are_cheap() -> None:
    b = TokenBuckets(TEN)
    for i in range(19):
        b.charge("k", found=True, now=0)
        assert b.admit("k", 0), i
    b.charge("k", found=True, now=0)
    assert not b.admit("k", 0)


def test_a_clock_stepping_back_refills_nothing() -> None:
    b = TokenBuckets(TEN)
    b.charge("k", found=False, now=100)
    assert b.tokens("k", 50) == 0
    b.charge("k", found=True, now=50)
    assert b.tokens("k", 100) == -1
    assert b.tokens("k", 101) == 0
    with pytest.raises(ValueError):
        b.tokens("k", float("nan"))


def test_full_buckets_are_forgotten() -> None:
    b = TokenBuckets(BucketSettings(size=20, refill_per_second=1, found_cost=0))
    b.charge("free", found=True, now=0)
    assert len(b) == 0  # a free lookup leaves the bucket full: nothing to hold
    b.charge("a", found=False, now=0)
    b.charge("b", found=False, now=10)
    assert len(b) == 2
    assert b.prune(1) == 0
    assert b.prune(20) == 1 and len(b) == 1  # b is still repaying
    assert b.tokens("a", 20) == 20 and b.tokens("b", 20) == 10
    assert b.prune(30) == 1 and len(b) == 0


def test_memory_stays_bounded_without_explicit_pruning() -> None:
    b = TokenBuckets(BucketSettings(size=2, refill_per_second=1))
    for i in range(20_000):
        b.charge(f"user{i}", found=True, now=i / 100)  # each full again 1 s later
    assert len(b) < 2 * 1024 + 200


@given(
    st.lists(
        st.tuples(
            st.floats(0, 30, allow_nan=False),
            st.sampled_from(["a", "b"]),
            st.sampled_from(["admit", "hit", "miss", "prune"]),
        ),
        max_size=60,
    ),
    st.floats(1, 50),
    st.floats(0.1, 10),
)
def test_a_bucket_never_exceeds_its_size(
    steps: list[tuple[float, str, str]], size: float, rate: float
) -> None:
    s = BucketSettings(size=size, refill_per_second=rate)
    b = TokenBuckets(s)
    now = 0.0
    model = {"a": size, "b": size}
    for dt, key, op in steps:
        now += dt
        for k in model:
            model[k] = min(size, model[k] + dt * rate)
        assert b.tokens(key, now) <= size
        assert b.tokens(key, now) == pytest.approx(model[key], abs=1e-6)
        if op == "admit":
            assert b.admit(key, now) == (b.tokens(key, now) >= 1)
        elif op == "prune":
            b.prune(now)
        else:
            b.charge(key, found=op == "hit", now=now)
            model[key] -= s.found_cost if op == "hit" else s.miss_cost
        assert b.tokens(key, now) <= size
        assert len(b) <= 2


# --- the lookup limiter ---------------------------------------------------------------------


def test_limiter_needs_both_buckets() -> None:
    lim = LookupLimiter(
        BucketSettings(size=100, refill_per_second=1),
        BucketSettings(size=20, refill_per_second=0.1),
    )
    assert lim.admit(A, "user-1", 0)
    lim.charge(A, "user-1", found=False, now=0)
    assert not lim.admit(A, "user-1", 0)  # the end user is out
    assert lim.admit(A, "user-2", 0)  # another end user of the same bank is not
    assert lim.admit(B, "user-1", 0)  # the same user id at another bank is another user
    assert lim.admit(A, None, 0)
    for _ in range(4):
        lim.charge(A, None, found=False, now=0)
    assert not lim.admit(A, None, 0) and not lim.admit(A, "user-3", 0)  # the bank is out
    assert (lim.admitted, lim.refused) == (4, 3)
    assert lim.participants.tokens(A, 0) == 0
    assert lim.prune(10_000) == 2


def test_limiter_charges_a_found_key_little() -> None:
    lim = LookupLimiter(
        BucketSettings(size=3, refill_per_second=1), BucketSettings(size=3, refill_per_second=1)
    )
    for _ in range(2):
        assert lim.admit(A, "u", 0)
        lim.charge(A, "u", found=True, now=0)
    assert lim.admit(A, "u", 0)
    lim.charge(A, "u", found=True, now=0)
    assert not lim.admit(A, "u", 0)
