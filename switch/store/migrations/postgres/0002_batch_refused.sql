-- A batch written as one statement checks its own row counts and refuses itself, so
-- that the whole statement, and with it the whole batch, rolls back.
CREATE OR REPLACE FUNCTION batch_refused(reason text) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'batch refused: ' || reason;
END
$$;
