-- 0001_init: the system of record of the switch (PostgreSQL).
--
-- Money is bigint minor units of the scheme currency; times are timestamptz (UTC).
-- Positions can never go negative (CHECK): a batch that would overdraw aborts whole.
-- The journal is append-only and archived messages are never deleted; the only change
-- an archived message may receive is its sent_at, once (triggers below).

CREATE TABLE participants (
    id             text PRIMARY KEY,
    member_id      text NOT NULL UNIQUE,
    name           text NOT NULL,
    status         text NOT NULL CHECK (status IN ('active', 'suspended', 'signed_off')),
    limit_minor    bigint CHECK (limit_minor > 0),
    limit_currency text,
    limit_exponent smallint,
    CHECK ((limit_minor IS NULL) = (limit_currency IS NULL)
           AND (limit_minor IS NULL) = (limit_exponent IS NULL))
);

CREATE TABLE positions (
    participant text PRIMARY KEY REFERENCES participants (id),
    available   bigint NOT NULL DEFAULT 0 CHECK (available >= 0),
    reserved    bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0)
);

-- Money brought into and taken out of the scheme: one row, updated with the journal.
CREATE TABLE scheme_totals (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    funded   bigint NOT NULL DEFAULT 0 CHECK (funded >= 0),
    defunded bigint NOT NULL DEFAULT 0 CHECK (defunded >= 0)
);
INSERT INTO scheme_totals DEFAULT VALUES;

-- One balanced double entry per row: amount moves FROM debit TO credit.
CREATE TABLE journal (
    seq    bigserial PRIMARY KEY,
    kind   text NOT NULL CHECK (kind IN ('fund', 'defund', 'reserve', 'release', 'settle')),
    debit  text NOT NULL,
    credit text NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    ref    text NOT NULL,
    at     timestamptz NOT NULL DEFAULT now(),
    CHECK (debit <> credit)
);

-- Every message in and out, unchanged; outbound rows with sent_at NULL are the outbox.
CREATE TABLE messages (
    id          text PRIMARY KEY,
    direction   text NOT NULL CHECK (direction IN ('in', 'out')),
    participant text NOT NULL,
    msg_type    text NOT NULL,
    biz_msg_id  text,
    sha256      text NOT NULL,
    raw         bytea NOT NULL,
    at          timestamptz NOT NULL,
    payment_id  text,
    in_reply_to text,
    sent_at     timestamptz,
    CHECK (direction = 'out' OR sent_at IS NULL)
);
-- Archived XML compresses well; lz4 costs far less CPU than the default pglz.
DO $$
BEGIN
    ALTER TABLE messages ALTER COLUMN raw SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;  -- a server built without lz4 keeps the default compression
END
$$;
CREATE INDEX messages_inbound_hash ON messages (participant, sha256) WHERE direction = 'in';
CREATE INDEX messages_in_reply_to ON messages (in_reply_to) WHERE in_reply_to IS NOT NULL;
CREATE INDEX messages_payment ON messages (payment_id) WHERE payment_id IS NOT NULL;
CREATE INDEX messages_unsent ON messages (at, id) WHERE direction = 'out' AND sent_at IS NULL;

CREATE TABLE payments (
    id                text PRIMARY KEY,
    uetr              text NOT NULL UNIQUE,
    msg_id            text NOT NULL,
    instr_id          text,
    end_to_end_id     text NOT NULL,
    tx_id             text,
    debtor_agent      text NOT NULL,
    creditor_agent    text,
    amount            bigint NOT NULL,
    state             text NOT NULL CHECK (state IN (
                          'received', 'reserved', 'forwarded', 'settled', 'rejected', 'timed_out')),
    reason            text,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    deadline          timestamptz,
    inbound_id        text NOT NULL,
    debtor_named_by   text NOT NULL,
    creditor_named_by text NOT NULL
);
-- A transaction is identified by its debtor agent, EndToEndId and TxId (TxId optional).
CREATE UNIQUE INDEX payments_transaction
    ON payments (debtor_agent, end_to_end_id, COALESCE(tx_id, ''));
CREATE INDEX payments_forwarded_deadline ON payments (deadline) WHERE state = 'forwarded';
CREATE INDEX payments_inbound ON payments (inbound_id);

-- GrpHdr/MsgId seen per sender (duplicate message check).
CREATE TABLE msg_ids (
    sender text NOT NULL,
    msg_id text NOT NULL,
    PRIMARY KEY (sender, msg_id)
);

-- Append-only enforcement.
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % refused: the table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE FUNCTION messages_only_set_sent_at() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    probe messages;
BEGIN
    probe := NEW;
    probe.sent_at := OLD.sent_at;
    IF OLD.sent_at IS NOT NULL OR probe IS DISTINCT FROM OLD THEN
        RAISE EXCEPTION 'UPDATE on messages refused: only an unset sent_at may be set'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE ON journal
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER messages_no_delete BEFORE DELETE ON messages
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER messages_no_truncate BEFORE TRUNCATE ON messages
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER messages_only_sent_at BEFORE UPDATE ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_only_set_sent_at();
