-- 0001_init: the system of record of the switch (SQLite).
--
-- The same logical schema as the PostgreSQL one. Money is INTEGER minor units; times
-- are ISO-8601 UTC text with microseconds ('2024-05-01T12:00:00.000000+00:00'), which
-- sorts in time order; raw messages are BLOBs. Positions can never go negative (CHECK):
-- a batch that would overdraw aborts whole. The journal is append-only and archived
-- messages are never deleted; the only change an archived message may receive is its
-- sent_at, once (triggers below).

CREATE TABLE participants (
    id             TEXT PRIMARY KEY NOT NULL,
    member_id      TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'signed_off')),
    limit_minor    INTEGER CHECK (limit_minor > 0),
    limit_currency TEXT,
    limit_exponent INTEGER,
    CHECK ((limit_minor IS NULL) = (limit_currency IS NULL)
           AND (limit_minor IS NULL) = (limit_exponent IS NULL))
);

CREATE TABLE positions (
    participant TEXT PRIMARY KEY NOT NULL REFERENCES participants (id),
    available   INTEGER NOT NULL DEFAULT 0 CHECK (available >= 0),
    reserved    INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0)
);

-- Money brought into and taken out of the scheme: one row, updated with the journal.
CREATE TABLE scheme_totals (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    funded   INTEGER NOT NULL DEFAULT 0 CHECK (funded >= 0),
    defunded INTEGER NOT NULL DEFAULT 0 CHECK (defunded >= 0)
);
INSERT INTO scheme_totals (id) VALUES (1);

-- One balanced double entry per row: amount moves FROM debit TO credit.
CREATE TABLE journal (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    kind   TEXT NOT NULL CHECK (kind IN ('fund', 'defund', 'reserve', 'release', 'settle')),
    debit  TEXT NOT NULL,
    credit TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    ref    TEXT NOT NULL,
    at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
    CHECK (debit <> credit)
);

-- Every message in and out, unchanged; outbound rows with sent_at NULL are the outbox.
CREATE TABLE messages (
    id          TEXT PRIMARY KEY NOT NULL,
    direction   TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    participant TEXT NOT NULL,
    msg_type    TEXT NOT NULL,
    biz_msg_id  TEXT,
    sha256      TEXT NOT NULL,
    raw         BLOB NOT NULL,
    at          TEXT NOT NULL,
    payment_id  TEXT,
    in_reply_to TEXT,
    sent_at     TEXT,
    CHECK (direction = 'out' OR sent_at IS NULL)
);
CREATE INDEX messages_inbound_hash ON messages (participant, sha256) WHERE direction = 'in';
CREATE INDEX messages_in_reply_to ON messages (in_reply_to) WHERE in_reply_to IS NOT NULL;
CREATE INDEX messages_payment ON messages (payment_id) WHERE payment_id IS NOT NULL;
CREATE INDEX messages_unsent ON messages (at, id) WHERE direction = 'out' AND sent_at IS NULL;

CREATE TABLE payments (
    id                TEXT PRIMARY KEY NOT NULL,
    uetr              TEXT NOT NULL UNIQUE,
    msg_id            TEXT NOT NULL,
    instr_id          TEXT,
    end_to_end_id     TEXT NOT NULL,
    tx_id             TEXT,
    debtor_agent      TEXT NOT NULL,
    creditor_agent    TEXT,
    amount            INTEGER NOT NULL,
    state             TEXT NOT NULL CHECK (state IN (
                          'received', 'reserved', 'forwarded', 'settled', 'rejected', 'timed_out')),
    reason            TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    deadline          TEXT,
    inbound_id        TEXT NOT NULL,
    debtor_named_by   TEXT NOT NULL,
    creditor_named_by TEXT NOT NULL
);
-- A transaction is identified by its debtor agent, EndToEndId and TxId (TxId optional).
CREATE UNIQUE INDEX payments_transaction
    ON payments (debtor_agent, end_to_end_id, COALESCE(tx_id, ''));
CREATE INDEX payments_forwarded_deadline ON payments (deadline) WHERE state = 'forwarded';
CREATE INDEX payments_inbound ON payments (inbound_id);

-- GrpHdr/MsgId seen per sender (duplicate message check).
CREATE TABLE msg_ids (
    sender TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    PRIMARY KEY (sender, msg_id)
) WITHOUT ROWID;

-- Append-only enforcement.
CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
BEGIN
    SELECT RAISE(ABORT, 'UPDATE on journal refused: the table is append-only');
END;

CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
BEGIN
    SELECT RAISE(ABORT, 'DELETE on journal refused: the table is append-only');
END;

CREATE TRIGGER messages_no_delete BEFORE DELETE ON messages
BEGIN
    SELECT RAISE(ABORT, 'DELETE on messages refused: the table is append-only');
END;

CREATE TRIGGER messages_only_sent_at BEFORE UPDATE ON messages
WHEN OLD.sent_at IS NOT NULL
    OR NEW.id IS NOT OLD.id
    OR NEW.direction IS NOT OLD.direction
    OR NEW.participant IS NOT OLD.participant
    OR NEW.msg_type IS NOT OLD.msg_type
    OR NEW.biz_msg_id IS NOT OLD.biz_msg_id
    OR NEW.sha256 IS NOT OLD.sha256
    OR NEW.raw IS NOT OLD.raw
    OR NEW.at IS NOT OLD.at
    OR NEW.payment_id IS NOT OLD.payment_id
    OR NEW.in_reply_to IS NOT OLD.in_reply_to
BEGIN
    SELECT RAISE(ABORT, 'UPDATE on messages refused: only an unset sent_at may be set');
END;
