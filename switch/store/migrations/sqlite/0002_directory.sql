-- 0002_directory: the alias directory (RULEBOOK §5), kept as its own history.
--
-- The same logical schema as PostgreSQL's 0003_directory: one appended row per change to
-- an alias or a portability claim, never updated or deleted; the current directory is
-- the latest row per alias (view `aliases`) and per claim (view `alias_claims`). Writers
-- hold SQLite's write lock (BEGIN IMMEDIATE), so rows commit in seq order.

CREATE TABLE directory_changes (
    seq              INTEGER PRIMARY KEY NOT NULL CHECK (seq > 0),
    at               TEXT NOT NULL,
    actor            TEXT NOT NULL,
    action           TEXT NOT NULL CHECK (action IN (
                         'register', 'update', 'deactivate', 'activate', 'delete',
                         'claim', 'confirm', 'reject', 'cancel', 'complete')),
    kind             TEXT NOT NULL CHECK (kind IN ('VPA', 'EMAL', 'TELE', 'EVP')),
    value            TEXT NOT NULL,
    participant      TEXT NOT NULL REFERENCES participants (id),
    account          TEXT NOT NULL,
    name             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('active', 'inactive', 'deleted')),
    created_at       TEXT NOT NULL,
    claim_id         TEXT,
    claim_state      TEXT CHECK (claim_state IN
                         ('open', 'confirmed', 'rejected', 'completed', 'cancelled')),
    claimant         TEXT REFERENCES participants (id),
    claim_owner      TEXT REFERENCES participants (id),
    claim_account    TEXT,
    claim_name       TEXT,
    claim_opened_at  TEXT,
    claim_expires_at TEXT,
    claim_closed_at  TEXT,
    CHECK ((claim_id IS NULL) = (claim_state IS NULL))
);
CREATE INDEX directory_changes_alias ON directory_changes (kind, value, seq);
CREATE INDEX directory_changes_claim ON directory_changes (claim_id, seq)
    WHERE claim_id IS NOT NULL;

CREATE TRIGGER directory_changes_no_update BEFORE UPDATE ON directory_changes
BEGIN
    SELECT RAISE(ABORT, 'the directory history is append-only');
END;
CREATE TRIGGER directory_changes_no_delete BEFORE DELETE ON directory_changes
BEGIN
    SELECT RAISE(ABORT, 'the directory history is append-only');
END;

CREATE VIEW aliases AS
SELECT c.kind, c.value, c.participant, c.account, c.name, c.status, c.seq AS version,
       c.created_at, c.at AS updated_at
  FROM directory_changes c
 WHERE c.seq = (SELECT max(seq) FROM directory_changes l
                 WHERE l.kind = c.kind AND l.value = c.value);

CREATE VIEW alias_claims AS
SELECT c.claim_id AS id, c.kind, c.value, c.claimant, c.claim_owner AS owner,
       c.claim_account AS account, c.claim_name AS name, c.claim_state AS state,
       c.claim_opened_at AS opened_at, c.claim_expires_at AS expires_at,
       c.claim_closed_at AS closed_at, c.seq AS version
  FROM directory_changes c
 WHERE c.claim_id IS NOT NULL
   AND c.seq = (SELECT max(seq) FROM directory_changes l WHERE l.claim_id = c.claim_id);

-- How far the engine has told the participants about directory changes (claim steps).
CREATE TABLE directory_cursor (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    notified INTEGER NOT NULL DEFAULT 0 CHECK (notified >= 0)
);
INSERT INTO directory_cursor (id) VALUES (1);
