-- Heartbeats atomizer-hq sends for agents, the heartbeats agents send themselves, and one scheduler lease.
CREATE TABLE heartbeat_runs (
    id           INTEGER PRIMARY KEY,
    agent        TEXT NOT NULL,
    slot         TEXT NOT NULL,                       -- the scheduled time (ISO, UTC); manual runs: when asked
    trigger      TEXT NOT NULL CHECK (trigger IN ('schedule', 'catch_up', 'manual')),
    status       TEXT NOT NULL CHECK (status IN ('running', 'ok', 'skipped', 'down', 'not_ready', 'rejected',
                                                  'unconfirmed', 'run_failed', 'no_completion')),
    level        TEXT,                                -- how far it got: live, ready, accepted, completed
    run_id       TEXT,
    detail       TEXT,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    UNIQUE (agent, slot)                              -- a slot runs once, whoever tries it
);
CREATE INDEX heartbeat_runs_agent ON heartbeat_runs (agent, slot);

CREATE TABLE heartbeat_state (
    agent        TEXT PRIMARY KEY,
    paused_until TEXT,                                -- NULL: running; '9999…': until resumed
    paused_by    TEXT,
    failures     INTEGER NOT NULL DEFAULT 0,          -- consecutive failed runs (dead-man's switch)
    alerted      INTEGER NOT NULL DEFAULT 0,          -- a "failing" alert is out; recovery announced once
    last_seen_at TEXT,                                -- agents with their own heartbeat: last sign of it
    seen_alerted INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE leases (
    name       TEXT PRIMARY KEY,                      -- 'scheduler'
    holder     TEXT NOT NULL,                         -- host:pid:random of the process holding it
    expires_at TEXT NOT NULL
);

-- Alerts gain the heartbeat kinds (SQLite cannot alter a CHECK: rebuild the table).
CREATE TABLE alerts_new (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    agent      TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('down', 'recovered', 'flapping', 'reminder',
                                             'heartbeat_failing', 'heartbeat_recovered', 'heartbeat_missing')),
    text       TEXT NOT NULL,
    posted_at  TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
INSERT INTO alerts_new SELECT * FROM alerts;
DROP TABLE alerts;
ALTER TABLE alerts_new RENAME TO alerts;
CREATE INDEX alerts_unposted ON alerts (posted_at, id);
