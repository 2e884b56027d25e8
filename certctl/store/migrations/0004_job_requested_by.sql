-- certctl schema, version 4: who asked for a job (an operator key name, or certctl for the
-- scheduler), so the two-person rule can keep the requester from approving it. Jobs from
-- before this version have no recorded requester and any admin may decide them.

ALTER TABLE jobs ADD COLUMN requested_by text NOT NULL DEFAULT '';
