"""The end-of-day statement (camt.053.001.08) a participant receives at rollover.

RULEBOOK §1 and §7: at each business day's rollover every participant receives a
statement of its settlement position. `build.statement` writes it from plain values; the
tests check that what it writes is valid for the scheme schema and the ISO base schema
alike, that its balances and summary add up (closing = opening + credits - debits),
that amounts are written exactly with the currency's exponent, that an empty day and a
very busy day are both valid, that the scheme's narrowings of camt.053 refuse what they
narrow away and nothing else, and that a statement reads back through the typed view.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from switch.iso20022 import (
    MessageType,
    ParseLimits,
    build,
    default_registry,
    parse,
    validate,
    views,
)
from switch.iso20022.build import StatementEntry, decimal_amount
from switch.iso20022.views import Agent
from tests.oracle import base_errors, base_schema

SWITCH = "SWCHUS33XXX"
BANK = "BNKAUS33XXX"
DAY_START = datetime(2026, 11, 21, 5, 0, tzinfo=UTC)
DAY_END = DAY_START + timedelta(days=1)
CREATED = DAY_END + timedelta(seconds=3, microseconds=114000)
NS = MessageType.CAMT_053.namespace
Q = "{" + NS + "}"
STMT = f"{Q}BkToCstmrStmt/{Q}Stmt"

FUND = StatementEntry(
    amount=5_000_000,
    credit=True,
    booked_at=DAY_START + timedelta(seconds=41),
    kind="fund",
    reference="1000184",
)
SENT = StatementEntry(
    amount=125_000,
    credit=False,
    booked_at=datetime(2026, 11, 21, 14, 3, 11, 487000, tzinfo=UTC),
    kind="settle",
    reference="1000392",
    end_to_end_id="INV-2026-11-0042",
    tx_id="T20261121BNKAUS33XXX0000000187",
    uetr="3f8b2c1e-9d4a-4e7b-8c21-5a6f0d9e7b43",
)
RECEIVED = StatementEntry(
    amount=31_000,
    credit=True,
    booked_at=datetime(2026, 11, 21, 16, 42, 5, 33000, tzinfo=UTC),
    kind="settle",
    reference="1000533",
    end_to_end_id="RENT-NOV-2026",
    uetr="7c2d9e14-5a3b-4f86-b1e0-9d4c3a2f6e85",
)
DEFUND = StatementEntry(
    amount=2_000_000,
    credit=False,
    booked_at=datetime(2026, 11, 21, 22, 15, tzinfo=UTC),
    kind="defund",
    reference="1000688",
)
ENTRIES = (FUND, SENT, RECEIVED, DEFUND)
OPENING = 25_000_000


def closing_of(opening: int, entries: tuple[StatementEntry, ...]) -> int:
    return opening + sum(e.amount if e.credit else -e.amount for e in entries)


def head_fields(opening: int, entries: tuple[StatementEntry, ...]) -> dict[str, Any]:
    """What a statement of BNKAUS33XXX's position for 2026-11-21 (New York) states
    besides its entries."""
    return {
        "msg_id": "SW5f2c1a9e0b3d400000009321",
        "statement_id": "BNKAUS33XXX-2026-11-21",
        "sequence": 326,
        "created": CREATED,
        "period_from": DAY_START,
        "period_to": DAY_END,
        "participant_bicfi": BANK,
        "account_id": BANK,
        "servicer_bicfi": SWITCH,
        "currency": "USD",
        "exponent": 2,
        "opening": opening,
        "closing": closing_of(opening, entries),
    }


def document(**overrides: Any) -> bytes:
    """A statement Document of BNKAUS33XXX's position for 2026-11-21 (New York)."""
    entries = overrides.get("entries", ENTRIES)
    opening = overrides.get("opening", OPENING)
    fields = {**head_fields(opening, tuple(entries)), "entries": entries}
    fields.update(overrides)
    return build.statement(**fields)


def business_message(doc: bytes) -> bytes:
    hdr = build.header(
        sender=Agent(bicfi=SWITCH),
        receiver=Agent(bicfi=BANK),
        biz_msg_idr="SW5f2c1a9e0b3d400000009321",
        mtype=MessageType.CAMT_053,
        created=CREATED,
    )
    return build.business_message(hdr, doc)


def scheme_errors(raw: bytes, limits: ParseLimits | None = None) -> list[str]:
    msg = parse(raw, limits) if limits is not None else parse(raw)
    assert msg.mtype is MessageType.CAMT_053
    return [i.message for i in validate(msg, default_registry())]


def scheme_and_base_errors(doc: bytes) -> tuple[list[str], list[str]]:
    raw = business_message(doc)
    return scheme_errors(raw), base_errors(raw)


def statement_of(doc: bytes) -> etree._Element:
    found = etree.fromstring(doc).find(STMT)
    assert found is not None
    return found


def at(el: etree._Element, path: str) -> str:
    """The text at `path` (slash-separated local names) below `el`."""
    found = el.findtext("/".join(Q + step for step in path.split("/")))
    assert found is not None, path
    return found


def balance(stmt: etree._Element, code: str) -> Decimal:
    for bal in stmt.iterfind(f"{Q}Bal"):
        if at(bal, "Tp/CdOrPrtry/Cd") == code:
            sign = -1 if at(bal, "CdtDbtInd") == "DBIT" else 1
            return sign * Decimal(at(bal, "Amt"))
    raise AssertionError(f"no {code} balance")


# --- valid for the scheme and the ISO base -----------------------------------------------


def test_statement_is_valid_for_the_scheme_and_the_base() -> None:
    assert scheme_and_base_errors(document()) == ([], [])


def test_empty_day_is_valid_and_adds_up() -> None:
    doc = document(entries=())
    assert scheme_and_base_errors(doc) == ([], [])
    stmt = statement_of(doc)
    assert stmt.find(f"{Q}Ntry") is None
    assert balance(stmt, "OPBD") == balance(stmt, "CLBD") == Decimal("250000.00")
    for part in ("TtlNtries", "TtlCdtNtries", "TtlDbtNtries"):
        assert at(stmt, f"TxsSummry/{part}/NbOfNtries") == "0"
        assert at(stmt, f"TxsSummry/{part}/Sum") == "0.00"


def test_new_participant_with_nothing_is_valid() -> None:
    assert scheme_and_base_errors(document(entries=(), opening=0)) == ([], [])


def test_header_and_account() -> None:
    stmt = statement_of(document())
    assert at(stmt, "Id") == "BNKAUS33XXX-2026-11-21"
    assert at(stmt, "ElctrncSeqNb") == "326"
    assert at(stmt, "CreDtTm") == "2026-11-22T05:00:03.114Z"
    assert at(stmt, "FrToDt/FrDtTm") == "2026-11-21T05:00:00.000Z"
    assert at(stmt, "FrToDt/ToDtTm") == "2026-11-22T05:00:00.000Z"
    assert at(stmt, "Acct/Id/Othr/Id") == BANK
    assert at(stmt, "Acct/Ccy") == "USD"
    assert at(stmt, "Acct/Ownr/Id/OrgId/AnyBIC") == BANK
    assert at(stmt, "Acct/Svcr/FinInstnId/BICFI") == SWITCH


# --- balances, summary and entries -------------------------------------------------------


def test_balances_and_summary_add_up() -> None:
    stmt = statement_of(document())
    opening, closing = balance(stmt, "OPBD"), balance(stmt, "CLBD")
    amounts = [(Decimal(at(n, "Amt")), at(n, "CdtDbtInd")) for n in stmt.iterfind(f"{Q}Ntry")]
    credits = sum(a for a, side in amounts if side == "CRDT")
    debits = sum(a for a, side in amounts if side == "DBIT")
    assert (opening, credits, debits) == (
        Decimal("250000.00"),
        Decimal("50310.00"),
        Decimal("21250.00"),
    )
    assert closing == opening + credits - debits == Decimal("279060.00")
    assert at(stmt, "TxsSummry/TtlNtries/NbOfNtries") == "4"
    assert Decimal(at(stmt, "TxsSummry/TtlNtries/Sum")) == credits + debits
    assert Decimal(at(stmt, "TxsSummry/TtlNtries/TtlNetNtry/Amt")) == credits - debits
    assert at(stmt, "TxsSummry/TtlNtries/TtlNetNtry/CdtDbtInd") == "CRDT"
    assert at(stmt, "TxsSummry/TtlCdtNtries/NbOfNtries") == "2"
    assert Decimal(at(stmt, "TxsSummry/TtlCdtNtries/Sum")) == credits
    assert at(stmt, "TxsSummry/TtlDbtNtries/NbOfNtries") == "2"
    assert Decimal(at(stmt, "TxsSummry/TtlDbtNtries/Sum")) == debits
    for bal, when in (("OPBD", "2026-11-21T05:00:00.000Z"), ("CLBD", "2026-11-22T05:00:00.000Z")):
        (found,) = (b for b in stmt.iterfind(f"{Q}Bal") if at(b, "Tp/CdOrPrtry/Cd") == bal)
        assert at(found, "Dt/DtTm") == when
        amount = found.find(f"{Q}Amt")
        assert amount is not None and amount.get("Ccy") == "USD"


def test_a_net_debit_day() -> None:
    stmt = statement_of(document(entries=(SENT, DEFUND)))
    assert at(stmt, "TxsSummry/TtlNtries/TtlNetNtry/Amt") == "21250.00"
    assert at(stmt, "TxsSummry/TtlNtries/TtlNetNtry/CdtDbtInd") == "DBIT"
    assert balance(stmt, "CLBD") == Decimal("228750.00")


def test_entries_in_order_with_journal_reference_kind_and_payment_references() -> None:
    stmt = statement_of(document())
    entries = stmt.findall(f"{Q}Ntry")
    assert [at(n, "AcctSvcrRef") for n in entries] == [e.reference for e in ENTRIES]
    assert [at(n, "BkTxCd/Prtry/Cd") for n in entries] == ["fund", "settle", "settle", "defund"]
    assert [at(n, "CdtDbtInd") for n in entries] == ["CRDT", "DBIT", "CRDT", "DBIT"]
    assert [at(n, "Amt") for n in entries] == ["50000.00", "1250.00", "310.00", "20000.00"]
    assert {at(n, "Sts/Cd") for n in entries} == {"BOOK"}
    sent = entries[1]
    assert at(sent, "BookgDt/DtTm") == at(sent, "ValDt/DtTm") == "2026-11-21T14:03:11.487Z"
    refs = sent.find(f"{Q}NtryDtls/{Q}TxDtls/{Q}Refs")
    assert refs is not None
    assert [(etree.QName(r).localname, r.text) for r in refs] == [
        ("EndToEndId", "INV-2026-11-0042"),
        ("UETR", "3f8b2c1e-9d4a-4e7b-8c21-5a6f0d9e7b43"),
        ("TxId", "T20261121BNKAUS33XXX0000000187"),
    ]
    received_refs = entries[2].find(f"{Q}NtryDtls/{Q}TxDtls/{Q}Refs")
    assert received_refs is not None
    assert [etree.QName(r).localname for r in received_refs] == ["EndToEndId", "UETR"]
    for movement in (entries[0], entries[3]):  # funding and defunding name no payment
        assert movement.find(f"{Q}NtryDtls") is None


def test_text_is_escaped() -> None:
    odd = replace(SENT, end_to_end_id='A&B<"C>', reference="R&1")
    doc = document(entries=(odd,))
    assert scheme_and_base_errors(doc) == ([], [])
    (entry,) = statement_of(doc).findall(f"{Q}Ntry")
    assert at(entry, "NtryDtls/TxDtls/Refs/EndToEndId") == 'A&B<"C>'
    assert at(entry, "AcctSvcrRef") == "R&1"


def test_a_statement_that_does_not_add_up_is_refused() -> None:
    with pytest.raises(ValueError, match="does not add up"):
        document(closing=closing_of(OPENING, ENTRIES) + 1)


@pytest.mark.parametrize("amount", [0, -5])
def test_an_entry_without_a_positive_amount_is_refused(amount: int) -> None:
    with pytest.raises(ValueError, match="amount must be > 0"):
        document(entries=(replace(FUND, amount=amount),))


def test_a_period_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="period"):
        document(period_from=DAY_END, period_to=DAY_START)


# --- amounts, exactly --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "exponent", "written"),
    [
        (0, 2, "0.00"),
        (5, 2, "0.05"),
        (10, 2, "0.10"),
        (123456, 2, "1234.56"),
        (999_999_999_999_999_99, 2, "999999999999999.99"),
        (100_000_000_000_000_01, 2, "100000000000000.01"),
        (7, 0, "7"),
        (0, 0, "0"),
        (1, 3, "0.001"),
        (1234567, 3, "1234.567"),
    ],
)
def test_amounts_are_written_exactly(minor: int, exponent: int, written: str) -> None:
    assert decimal_amount(minor, exponent) == written
    assert Decimal(written).scaleb(exponent) == minor


@pytest.mark.parametrize(("minor", "exponent"), [(-1, 2), (1, -1)])
def test_a_negative_amount_or_exponent_is_refused(minor: int, exponent: int) -> None:
    with pytest.raises(ValueError):
        decimal_amount(minor, exponent)


def test_a_large_amount_keeps_every_cent() -> None:
    big = replace(FUND, amount=100_000_000_000_000_01)
    doc = document(entries=(big,), opening=0)
    assert scheme_and_base_errors(doc) == ([], [])
    stmt = statement_of(doc)
    assert at(stmt, "Ntry/Amt") == "100000000000000.01"
    assert balance(stmt, "CLBD") == Decimal("100000000000000.01")


def test_other_exponents_are_valid_iso_20022() -> None:
    # The scheme's currency is USD with 2 decimals; the builder itself is exact for any
    # exponent, and its output stays a valid ISO 20022 statement.
    for currency, exponent, written in (("JPY", 0, "1250"), ("BHD", 3, "1.250")):
        entries = (replace(SENT, amount=1250),)
        doc = document(currency=currency, exponent=exponent, entries=entries, opening=1250)
        stmt = statement_of(doc)
        assert at(stmt, "Ntry/Amt") == written
        assert base_errors(business_message(doc)) == []
        assert scheme_errors(business_message(doc)) != []  # not the scheme currency


def test_a_negative_balance_is_written_as_a_debit() -> None:
    doc = document(entries=(DEFUND,), opening=1_000_000)
    stmt = statement_of(doc)
    assert balance(stmt, "CLBD") == Decimal("-10000.00")
    (closing,) = (b for b in stmt.iterfind(f"{Q}Bal") if at(b, "Tp/CdOrPrtry/Cd") == "CLBD")
    assert (at(closing, "Amt"), at(closing, "CdtDbtInd")) == ("10000.00", "DBIT")
    assert base_errors(business_message(doc)) == []


# --- a busy day --------------------------------------------------------------------------


def test_a_day_of_ten_thousand_entries_builds_and_validates() -> None:
    entries = tuple(
        StatementEntry(
            amount=1 + (i * 7919) % 500_000,
            credit=i % 3 != 0,
            booked_at=DAY_START + timedelta(milliseconds=8_640 * i),
            kind="settle",
            reference=str(2_000_000 + i),
            end_to_end_id=f"E2E-{i:08d}",
            tx_id=f"T20261121BNKAUS33XXX{i:010d}",
            uetr=f"{i:08x}-0000-4000-8000-{i:012x}",
        )
        for i in range(10_000)
    )
    started = time.perf_counter()
    doc = document(entries=entries)
    built_in = time.perf_counter() - started
    assert built_in < 5, f"10,000 entries took {built_in:.2f} s to build"
    stmt = statement_of(doc)
    assert len(stmt.findall(f"{Q}Ntry")) == 10_000
    credits = sum(e.amount for e in entries if e.credit)
    debits = sum(e.amount for e in entries if not e.credit)
    assert Decimal(at(stmt, "TxsSummry/TtlCdtNtries/Sum")).scaleb(2) == credits
    assert Decimal(at(stmt, "TxsSummry/TtlDbtNtries/Sum")).scaleb(2) == debits
    assert balance(stmt, "CLBD").scaleb(2) == OPENING + credits - debits
    raw = business_message(doc)
    assert scheme_errors(raw, ParseLimits(max_bytes=len(raw))) == []
    base = base_schema(MessageType.CAMT_053)
    assert base.validate(etree.fromstring(doc)), base.error_log


# --- the scheme's narrowings -------------------------------------------------------------


def _mutated(change: str, old: str, new: str) -> bytes:
    doc = document()
    assert old in doc.decode(), change
    return doc.decode().replace(old, new, 1).encode()


NARROWED_AWAY = {
    "entry not booked": ("<Cd>BOOK</Cd>", "<Cd>PDNG</Cd>"),
    "balance neither opening nor closing booked": ("<Cd>OPBD</Cd>", "<Cd>ITBD</Cd>"),
    "entry amount with 3 decimals": (">1250.00<", ">1250.001<"),
    "entry amount zero": (">1250.00<", ">0.00<"),
    "no summary of credits": (
        "<TtlCdtNtries><NbOfNtries>2</NbOfNtries><Sum>50310.00</Sum></TtlCdtNtries>",
        "",
    ),
    "entry in another currency": ('<Amt Ccy="USD">1250.00', '<Amt Ccy="EUR">1250.00'),
    "balance in another currency": ('<Amt Ccy="USD">250000.00', '<Amt Ccy="EUR">250000.00'),
    "no sequence number": ("<ElctrncSeqNb>326</ElctrncSeqNb>", ""),
    "no period": (
        "<FrToDt><FrDtTm>2026-11-21T05:00:00.000Z</FrDtTm>"
        "<ToDtTm>2026-11-22T05:00:00.000Z</ToDtTm></FrToDt>",
        "",
    ),
    "servicer without BICFI": (
        f"<Svcr><FinInstnId><BICFI>{SWITCH}</BICFI></FinInstnId></Svcr>",
        "<Svcr><FinInstnId><Nm>The switch</Nm></FinInstnId></Svcr>",
    ),
    "no journal reference": ("<AcctSvcrRef>1000392</AcctSvcrRef>", ""),
    "no journal kind": (
        "<BkTxCd><Prtry><Cd>settle</Cd></Prtry></BkTxCd>",
        "<BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly>"
        "</Domn></BkTxCd>",
    ),
}


@pytest.mark.parametrize("change", NARROWED_AWAY, ids=list(NARROWED_AWAY))
def test_the_scheme_refuses_what_it_narrows_away(change: str) -> None:
    doc = _mutated(change, *NARROWED_AWAY[change])
    scheme, base = scheme_and_base_errors(doc)
    assert scheme != []
    assert base == []


def test_the_servicers_narrowing_does_not_reach_other_agents() -> None:
    # The servicer must be named by BICFI; an agent elsewhere in the statement keeps the
    # base definition and may still be named by clearing member id alone.
    doc = _mutated(
        "related agent by member id",
        "</Refs>",
        "</Refs><RltdAgts><DbtrAgt><FinInstnId><ClrSysMmbId><ClrSysId><Cd>USABA</Cd>"
        "</ClrSysId><MmbId>011000015</MmbId></ClrSysMmbId></FinInstnId></DbtrAgt></RltdAgts>",
    )
    assert scheme_and_base_errors(doc) == ([], [])


# --- read back through the typed view ----------------------------------------------------


def test_statement_reads_back_through_the_view() -> None:
    msg = parse(business_message(document()))
    found = views.document_view(msg)
    assert isinstance(found, views.BankToCustomerStatement)
    assert (found.msg_id, found.created) == (
        "SW5f2c1a9e0b3d400000009321",
        "2026-11-22T05:00:03.114Z",
    )
    (stmt,) = found.statements
    assert (stmt.id, stmt.sequence, stmt.account_id, stmt.owner_bic) == (
        "BNKAUS33XXX-2026-11-21",
        326,
        BANK,
        BANK,
    )
    assert (stmt.period_from, stmt.period_to) == (
        "2026-11-21T05:00:00.000Z",
        "2026-11-22T05:00:00.000Z",
    )
    assert stmt.servicer == Agent(bicfi=SWITCH)
    assert stmt.opening == views.Amount(value=Decimal("250000.00"), currency="USD")
    assert stmt.closing == views.Amount(value=Decimal("279060.00"), currency="USD")
    assert [
        (
            int(e.amount.value.scaleb(2)),
            e.credit,
            e.kind,
            e.reference,
            e.end_to_end_id,
            e.tx_id,
            e.uetr,
        )
        for e in stmt.entries
    ] == [
        (e.amount, e.credit, e.kind, e.reference, e.end_to_end_id, e.tx_id, e.uetr) for e in ENTRIES
    ]
    assert {e.status for e in stmt.entries} == {"BOOK"}
    assert stmt.entries[1].booked == stmt.entries[1].value == "2026-11-21T14:03:11.487Z"


def test_a_debit_balance_reads_back_negative() -> None:
    found = views.document_view(parse(business_message(document(entries=(DEFUND,), opening=0))))
    assert isinstance(found, views.BankToCustomerStatement)
    assert found.statements[0].closing == views.Amount(value=Decimal("-20000.00"), currency="USD")


def test_the_example_statement_is_valid_and_adds_up() -> None:
    raw = (Path(__file__).resolve().parents[2] / "examples" / "camt.053.xml").read_bytes()
    assert scheme_errors(raw) == []
    assert base_errors(raw) == []
    found = views.document_view(parse(raw))
    assert isinstance(found, views.BankToCustomerStatement)
    (stmt,) = found.statements
    assert stmt.opening is not None and stmt.closing is not None
    net = sum(e.amount.value if e.credit else -e.amount.value for e in stmt.entries)
    assert stmt.closing.value == stmt.opening.value + net


def test_a_statement_written_in_pieces_is_the_same_document() -> None:
    """Head, entries page by page, tail: byte for byte what `statement` writes whole."""
    whole = document()
    totals = build.StatementTotals()
    for e in ENTRIES:
        totals.add(e)
    fields = head_fields(OPENING, ENTRIES)
    pieces = [build.statement_head(**fields, totals=totals)]
    for i in range(0, len(ENTRIES), 2):
        pieces.append(build.statement_entries(ENTRIES[i : i + 2], currency="USD", exponent=2))
    assert b"".join([*pieces, build.STATEMENT_TAIL]) == whole
    wrong = build.StatementTotals(credits=totals.credits + 1, n_credits=totals.n_credits)
    with pytest.raises(ValueError, match="does not add up"):
        build.statement_head(**fields, totals=wrong)
    with pytest.raises(ValueError, match="negative totals"):
        build.statement_head(
            **{**fields, "closing": OPENING}, totals=build.StatementTotals(n_debits=-1)
        )
