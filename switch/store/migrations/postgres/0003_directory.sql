-- 0003_directory: the alias directory (RULEBOOK §5), kept as its own history.
--
-- Every change to an alias or a portability claim is one appended row; nothing is
-- updated or deleted. A row holds the alias as it is AFTER the change and, for the steps
-- of a claim, the claim after the step. The current directory is the latest row per
-- alias (view `aliases`) and the latest row per claim (view `alias_claims`). `seq` is the
-- directory's clock: writers take one transaction-scoped advisory lock, so rows commit in
-- seq order and a reader that has seen seq N has seen everything up to N.

CREATE TABLE directory_changes (
    seq              bigint PRIMARY KEY CHECK (seq > 0),
    at               timestamptz NOT NULL,
    actor            text NOT NULL,
    action           text NOT NULL CHECK (action IN (
                         'register', 'update', 'deactivate', 'activate', 'delete',
                         'claim', 'confirm', 'reject', 'cancel', 'complete')),
    kind             text NOT NULL CHECK (kind IN ('VPA', 'EMAL', 'TELE', 'EVP')),
    value            text NOT NULL,
    participant      text NOT NULL REFERENCES participants (id),
    account          text NOT NULL,
    name             text NOT NULL,
    status           text NOT NULL CHECK (status IN ('active', 'inactive', 'deleted')),
    created_at       timestamptz NOT NULL,
    claim_id         text,
    claim_state      text CHECK (claim_state IN
                         ('open', 'confirmed', 'rejected', 'completed', 'cancelled')),
    claimant         text REFERENCES participants (id),
    claim_owner      text REFERENCES participants (id),
    claim_account    text,
    claim_name       text,
    claim_opened_at  timestamptz,
    claim_expires_at timestamptz,
    claim_closed_at  timestamptz,
    CHECK ((claim_id IS NULL) = (claim_state IS NULL))
);
CREATE INDEX directory_changes_alias ON directory_changes (kind, value, seq DESC);
CREATE INDEX directory_changes_claim ON directory_changes (claim_id, seq DESC)
    WHERE claim_id IS NOT NULL;

CREATE FUNCTION directory_changes_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the directory history is append-only';
END
$$;
CREATE TRIGGER directory_changes_append_only BEFORE UPDATE OR DELETE ON directory_changes
    FOR EACH ROW EXECUTE FUNCTION directory_changes_append_only();

CREATE VIEW aliases AS
SELECT DISTINCT ON (kind, value)
       kind, value, participant, account, name, status, seq AS version, created_at,
       at AS updated_at
  FROM directory_changes
 ORDER BY kind, value, seq DESC;

CREATE VIEW alias_claims AS
SELECT DISTINCT ON (claim_id)
       claim_id AS id, kind, value, claimant, claim_owner AS owner, claim_account AS account,
       claim_name AS name, claim_state AS state, claim_opened_at AS opened_at,
       claim_expires_at AS expires_at, claim_closed_at AS closed_at, seq AS version
  FROM directory_changes
 WHERE claim_id IS NOT NULL
 ORDER BY claim_id, seq DESC;

-- How far the engine has told the participants about directory changes (claim steps).
CREATE TABLE directory_cursor (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    notified bigint NOT NULL DEFAULT 0 CHECK (notified >= 0)
);
INSERT INTO directory_cursor DEFAULT VALUES;
