-- 0004_operations: what the switch's operators work with, and the indexes their
-- payment searches need.
--
-- operator_tokens: bearer tokens; only the SHA-256 (hex) of each secret is kept. A token
--   is never deleted; the only change it may receive is its revocation, once.
-- audit_log: what operators did, one row per action, with the target before and after
--   (jsonb). Append-only like the journal: UPDATE, DELETE and TRUNCATE are refused.
-- approvals: fundings and defundings one operator (maker) made and another must check.
--   Never deleted; an approval leaves 'pending' once, to its decision, and a maker
--   never approves their own.

CREATE TABLE operator_tokens (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    secret_sha256 text NOT NULL CHECK (secret_sha256 ~ '^[0-9a-f]{64}$'),
    created_at    timestamptz NOT NULL,
    created_by    text,
    revoked_at    timestamptz,
    revoked_by    text,
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);

CREATE TABLE audit_log (
    seq      bigserial PRIMARY KEY,
    at       timestamptz NOT NULL,
    actor    text NOT NULL,
    role     text NOT NULL,
    action   text NOT NULL,
    target   text NOT NULL,
    before   jsonb CHECK (jsonb_typeof(before) = 'object'),
    after    jsonb CHECK (jsonb_typeof(after) = 'object'),
    approval text
);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_target ON audit_log (target, seq);

CREATE TABLE approvals (
    id          text PRIMARY KEY,
    action      text NOT NULL CHECK (action IN ('fund', 'defund')),
    participant text NOT NULL REFERENCES participants (id),
    amount      bigint NOT NULL CHECK (amount > 0),
    reference   text NOT NULL,
    maker       text NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    state       text NOT NULL CHECK (state IN ('pending', 'approved', 'rejected', 'expired')),
    checker     text,
    decided_at  timestamptz,
    CHECK (expires_at > created_at),
    CHECK ((state = 'pending') = (checker IS NULL)),
    CHECK ((state = 'pending') = (decided_at IS NULL)),
    CHECK (state <> 'approved' OR checker <> maker)
);
CREATE INDEX approvals_state ON approvals (state, created_at, id);

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

CREATE FUNCTION operator_tokens_only_revoke() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    probe operator_tokens;
BEGIN
    probe := NEW;
    probe.revoked_at := OLD.revoked_at;
    probe.revoked_by := OLD.revoked_by;
    IF OLD.revoked_at IS NOT NULL OR probe IS DISTINCT FROM OLD THEN
        RAISE EXCEPTION 'UPDATE on operator_tokens refused: a token may only be revoked, once'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER operator_tokens_only_revoke BEFORE UPDATE ON operator_tokens
    FOR EACH ROW EXECUTE FUNCTION operator_tokens_only_revoke();
CREATE TRIGGER operator_tokens_no_delete BEFORE DELETE ON operator_tokens
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER operator_tokens_no_truncate BEFORE TRUNCATE ON operator_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

CREATE FUNCTION approvals_only_decide() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    probe approvals;
BEGIN
    probe := NEW;
    probe.state := OLD.state;
    probe.checker := OLD.checker;
    probe.decided_at := OLD.decided_at;
    IF OLD.state <> 'pending' OR probe IS DISTINCT FROM OLD THEN
        RAISE EXCEPTION 'UPDATE on approvals refused: only a pending approval may be decided'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER approvals_only_decide BEFORE UPDATE ON approvals
    FOR EACH ROW EXECUTE FUNCTION approvals_only_decide();
CREATE TRIGGER approvals_no_delete BEFORE DELETE ON approvals
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER approvals_no_truncate BEFORE TRUNCATE ON approvals
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Payment search, newest first: by time alone, by state, by either agent (the debtor
-- agent leads payments_transaction already); and the payments that reached a final
-- state lately, by when they did (a final payment's updated_at never changes again).
CREATE INDEX IF NOT EXISTS payments_created ON payments (created_at, id);
CREATE INDEX IF NOT EXISTS payments_state_created ON payments (state, created_at);
CREATE INDEX IF NOT EXISTS payments_creditor ON payments (creditor_agent);
CREATE INDEX IF NOT EXISTS payments_final_updated ON payments (updated_at)
    WHERE state IN ('settled', 'rejected', 'timed_out');
