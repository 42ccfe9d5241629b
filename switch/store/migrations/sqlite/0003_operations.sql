-- 0003_operations: what the switch's operators work with, and the indexes their
-- payment searches need.
--
-- The same logical schema as PostgreSQL's 0004_operations. operator_tokens keep only the
-- SHA-256 (hex) of each secret and may only be revoked, once; audit_log is append-only
-- (before/after are JSON objects held as TEXT); an approval leaves 'pending' once, to
-- its decision, and a maker never approves their own. Nothing here is deleted.

CREATE TABLE operator_tokens (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    secret_sha256 TEXT NOT NULL CHECK (length(secret_sha256) = 64
                                       AND secret_sha256 NOT GLOB '*[^0-9a-f]*'),
    created_at    TEXT NOT NULL,
    created_by    TEXT,
    revoked_at    TEXT,
    revoked_by    TEXT,
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);

CREATE TABLE audit_log (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    at       TEXT NOT NULL,
    actor    TEXT NOT NULL,
    role     TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    before   TEXT CHECK (before IS NULL OR json_type(before) = 'object'),
    after    TEXT CHECK (after IS NULL OR json_type(after) = 'object'),
    approval TEXT
);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_target ON audit_log (target, seq);

CREATE TABLE approvals (
    id          TEXT PRIMARY KEY NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('fund', 'defund')),
    participant TEXT NOT NULL REFERENCES participants (id),
    amount      INTEGER NOT NULL CHECK (amount > 0),
    reference   TEXT NOT NULL,
    maker       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected', 'expired')),
    checker     TEXT,
    decided_at  TEXT,
    CHECK (expires_at > created_at),
    CHECK ((state = 'pending') = (checker IS NULL)),
    CHECK ((state = 'pending') = (decided_at IS NULL)),
    CHECK (state <> 'approved' OR checker <> maker)
);
CREATE INDEX approvals_state ON approvals (state, created_at, id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'UPDATE on audit_log refused: the table is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'DELETE on audit_log refused: the table is append-only');
END;

CREATE TRIGGER operator_tokens_only_revoke BEFORE UPDATE ON operator_tokens
WHEN OLD.revoked_at IS NOT NULL
    OR NEW.id IS NOT OLD.id
    OR NEW.name IS NOT OLD.name
    OR NEW.role IS NOT OLD.role
    OR NEW.secret_sha256 IS NOT OLD.secret_sha256
    OR NEW.created_at IS NOT OLD.created_at
    OR NEW.created_by IS NOT OLD.created_by
BEGIN
    SELECT RAISE(ABORT, 'UPDATE on operator_tokens refused: a token may only be revoked, once');
END;

CREATE TRIGGER operator_tokens_no_delete BEFORE DELETE ON operator_tokens
BEGIN
    SELECT RAISE(ABORT, 'DELETE on operator_tokens refused: the table is append-only');
END;

CREATE TRIGGER approvals_only_decide BEFORE UPDATE ON approvals
WHEN OLD.state <> 'pending'
    OR NEW.id IS NOT OLD.id
    OR NEW.action IS NOT OLD.action
    OR NEW.participant IS NOT OLD.participant
    OR NEW.amount IS NOT OLD.amount
    OR NEW.reference IS NOT OLD.reference
    OR NEW.maker IS NOT OLD.maker
    OR NEW.created_at IS NOT OLD.created_at
    OR NEW.expires_at IS NOT OLD.expires_at
BEGIN
    SELECT RAISE(ABORT, 'UPDATE on approvals refused: only a pending approval may be decided');
END;

CREATE TRIGGER approvals_no_delete BEFORE DELETE ON approvals
BEGIN
    SELECT RAISE(ABORT, 'DELETE on approvals refused: the table is append-only');
END;

-- Payment search, newest first: by time alone, by state, by either agent (the debtor
-- agent leads payments_transaction already); and the payments that reached a final
-- state lately, by when they did (a final payment's updated_at never changes again).
CREATE INDEX IF NOT EXISTS payments_created ON payments (created_at, id);
CREATE INDEX IF NOT EXISTS payments_state_created ON payments (state, created_at);
CREATE INDEX IF NOT EXISTS payments_creditor ON payments (creditor_agent);
CREATE INDEX IF NOT EXISTS payments_final_updated ON payments (updated_at)
    WHERE state IN ('settled', 'rejected', 'timed_out');
