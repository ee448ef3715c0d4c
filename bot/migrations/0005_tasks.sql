-- The task board: tasks, and an append-only history of every change to them.
CREATE TABLE tasks (
    id             INTEGER PRIMARY KEY,               -- shown as T-<id>
    title          TEXT    NOT NULL,
    description    TEXT,
    status         TEXT    NOT NULL CHECK (status IN ('todo', 'in_progress', 'blocked', 'review', 'done', 'cancelled')),
    assignee_kind  TEXT    CHECK (assignee_kind IN ('agent', 'user')),
    assignee       TEXT,                              -- an agent's name, or a Discord user id
    assignee_label TEXT,                              -- how a user assignee reads (@antoine)
    priority       TEXT    NOT NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    due            TEXT,                              -- YYYY-MM-DD
    blocked_reason TEXT,
    creator_kind   TEXT    NOT NULL,
    creator        TEXT    NOT NULL,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL,
    version        INTEGER NOT NULL DEFAULT 1         -- optimistic concurrency: a stale write is refused
);
CREATE INDEX tasks_status ON tasks (status, priority);
CREATE INDEX tasks_assignee ON tasks (assignee, status);

CREATE TABLE task_events (
    id         INTEGER PRIMARY KEY,
    task_id    INTEGER NOT NULL REFERENCES tasks (id),
    at         TEXT    NOT NULL,
    actor_kind TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    front_end  TEXT    NOT NULL,
    action     TEXT    NOT NULL,                      -- create, move, assign
    old_value  TEXT,
    new_value  TEXT,
    note       TEXT
);
CREATE INDEX task_events_task ON task_events (task_id, id);
CREATE INDEX delegations_task ON delegations (task);
