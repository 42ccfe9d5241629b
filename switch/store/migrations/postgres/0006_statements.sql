-- 0006_statements: end-of-day statements (RULEBOOK §1, §7).
--
-- One row per participant and business day, written once the signed camt.053 is in the
-- participant's outbox (its bytes are kept in the participant's archive under
-- `file_name`, with this SHA-256). `sequence` counts a participant's statements from 1
-- (ElctrncSeqNb). The closing of one day is the opening of the next. Never changed nor
-- deleted. The journal gets an index on its booking time: a statement reads one day.

CREATE INDEX journal_at ON journal (at);

CREATE TABLE statements (
    participant  text NOT NULL,
    business_day date NOT NULL,
    sequence     integer NOT NULL CHECK (sequence >= 1),
    msg_id       text NOT NULL UNIQUE,
    file_name    text NOT NULL,
    period_from  timestamptz NOT NULL,
    period_to    timestamptz NOT NULL,
    opening      bigint NOT NULL,
    closing      bigint NOT NULL,
    entries      integer NOT NULL CHECK (entries >= 0),
    sha256       text NOT NULL,
    delivered_at timestamptz NOT NULL,
    PRIMARY KEY (participant, business_day),
    UNIQUE (participant, sequence),
    CHECK (period_from < period_to)
);

CREATE TRIGGER statements_append_only BEFORE UPDATE OR DELETE ON statements
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
