-- 0005_statements: end-of-day statements (RULEBOOK §1, §7).
--
-- One row per participant and business day, written once the signed camt.053 is in the
-- participant's outbox (its bytes are kept in the participant's archive under
-- `file_name`, with this SHA-256). `sequence` counts a participant's statements from 1
-- (ElctrncSeqNb). The closing of one day is the opening of the next. Never changed nor
-- deleted. The journal gets an index on its booking time: a statement reads one day.

CREATE INDEX journal_at ON journal (at);

CREATE TABLE statements (
    participant  TEXT NOT NULL,
    business_day TEXT NOT NULL,
    sequence     INTEGER NOT NULL CHECK (sequence >= 1),
    msg_id       TEXT NOT NULL UNIQUE,
    file_name    TEXT NOT NULL,
    period_from  TEXT NOT NULL,
    period_to    TEXT NOT NULL,
    opening      INTEGER NOT NULL,
    closing      INTEGER NOT NULL,
    entries      INTEGER NOT NULL CHECK (entries >= 0),
    sha256       TEXT NOT NULL,
    delivered_at TEXT NOT NULL,
    PRIMARY KEY (participant, business_day),
    UNIQUE (participant, sequence),
    CHECK (period_from < period_to)
) WITHOUT ROWID;

CREATE TRIGGER statements_no_update BEFORE UPDATE ON statements
BEGIN
    SELECT RAISE(ABORT, 'UPDATE on statements refused: the table is append-only');
END;
CREATE TRIGGER statements_no_delete BEFORE DELETE ON statements
BEGIN
    SELECT RAISE(ABORT, 'DELETE on statements refused: the table is append-only');
END;
