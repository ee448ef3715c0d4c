-- Workflows (docs/workflows-design.md): runs, their steps, approval decisions and an append-only event log.
CREATE TABLE workflow_runs (
    id               INTEGER PRIMARY KEY,             -- shown as W-<id>
    workflow         TEXT    NOT NULL,
    definition_json  TEXT    NOT NULL,                -- snapshot at start: editing the file never changes a run
    inputs_json      TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    starter_kind     TEXT    NOT NULL CHECK (starter_kind IN ('person', 'agent')),
    starter          TEXT    NOT NULL,
    starter_user_id  TEXT,
    starter_level    INTEGER NOT NULL DEFAULT 0,
    starter_via      TEXT,
    front_end        TEXT    NOT NULL,
    origin           TEXT,                            -- the delivery target of the place it was started from
    thread_id        TEXT,
    card_message_id  TEXT,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    finished_at      TEXT,
    error            TEXT
);
CREATE INDEX workflow_runs_status ON workflow_runs (status, id);

CREATE TABLE workflow_steps (
    run_id         INTEGER NOT NULL REFERENCES workflow_runs (id),
    step_id        TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('agent', 'approval')),
    status         TEXT    NOT NULL CHECK (status IN ('pending', 'dispatching', 'running', 'succeeded', 'failed',
                           'timed_out', 'unconfirmed', 'cancelled', 'skipped', 'waiting_approval', 'approved',
                           'rejected', 'expired')),
    agent          TEXT,
    attempt        INTEGER NOT NULL DEFAULT 0,
    delegation_id  INTEGER REFERENCES delegations (id),
    output         TEXT,
    output_source  TEXT,                              -- completion | discord | api | taskboard | person
    evidence       TEXT,                              -- JSON: runId, admission time, completion, approvers
    started_at     TEXT,
    deadline_at    TEXT,                              -- step timeout, or the approval's expiry
    finished_at    TEXT,
    error          TEXT,
    PRIMARY KEY (run_id, step_id)
);
CREATE INDEX workflow_steps_status ON workflow_steps (status, deadline_at);

CREATE TABLE workflow_approvals (
    id               INTEGER PRIMARY KEY,
    run_id           INTEGER NOT NULL REFERENCES workflow_runs (id),
    step_id          TEXT    NOT NULL,
    approver_kind    TEXT    NOT NULL,
    approver         TEXT    NOT NULL,                -- user:<id>, person:<name> or agent:<name>
    approver_name    TEXT    NOT NULL,
    approver_user_id TEXT,
    decision         TEXT    NOT NULL CHECK (decision IN ('approve', 'reject')),
    at               TEXT    NOT NULL,
    front_end        TEXT    NOT NULL,
    reason           TEXT,
    UNIQUE (run_id, step_id, approver)
);

CREATE TABLE workflow_events (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES workflow_runs (id),
    step_id     TEXT,
    at          TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    detail_json TEXT    NOT NULL
);
CREATE INDEX workflow_events_run ON workflow_events (run_id, id);

-- `W-3/mesh#1` (run, step, attempt): the database itself refuses a second dispatch of the same attempt.
ALTER TABLE delegations ADD COLUMN workflow_step TEXT;
CREATE UNIQUE INDEX delegations_workflow_step ON delegations (workflow_step) WHERE workflow_step IS NOT NULL;
