-- Foundation: facts about this database, and the audit trail every front end writes to.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY,
    at         TEXT    NOT NULL,              -- ISO 8601, UTC
    actor_kind TEXT    NOT NULL CHECK (actor_kind IN ('person', 'agent', 'system')),
    actor      TEXT    NOT NULL,
    front_end  TEXT    NOT NULL,
    action     TEXT    NOT NULL,              -- e.g. 'delegate', 'task.move', 'cluster.restart'
    subject    TEXT,                          -- e.g. an agent name or a task id
    decision   TEXT    NOT NULL CHECK (decision IN ('allowed', 'refused', 'failed')),
    detail     TEXT                           -- JSON
);
CREATE INDEX audit_log_at ON audit_log (at);
