-- Delegations: written before anything is sent, so none is lost when an agent or the bot restarts.
CREATE TABLE delegations (
    id                INTEGER PRIMARY KEY,              -- shown as D-<id>
    idem_key          TEXT    NOT NULL UNIQUE,          -- Idempotency-Key sent to the gateway (uuid)
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    requester_kind    TEXT    NOT NULL CHECK (requester_kind IN ('person', 'agent')),
    requester         TEXT    NOT NULL,
    requester_user_id TEXT,
    via               TEXT,                             -- the admin acting for an agent (--as)
    front_end         TEXT    NOT NULL,
    agent             TEXT    NOT NULL,
    message           TEXT    NOT NULL,
    deliver           INTEGER NOT NULL,
    target            TEXT,                             -- user:<id> / channel:<id> when delivering
    task              TEXT,
    status            TEXT    NOT NULL CHECK (status IN ('queued', 'sending', 'accepted', 'failed', 'unconfirmed', 'expired')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    run_id            TEXT,
    last_error        TEXT,
    next_attempt_at   TEXT,
    expires_at        TEXT    NOT NULL,
    accepted_at       TEXT,
    latency_ms        REAL
);
CREATE INDEX delegations_due ON delegations (status, next_attempt_at);
CREATE INDEX delegations_agent ON delegations (agent, id);
