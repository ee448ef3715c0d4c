-- Status history: every observed state change, the alert state machine per agent, and alerts to post.
CREATE TABLE agent_transitions (
    id         INTEGER PRIMARY KEY,
    agent      TEXT NOT NULL,
    at         TEXT NOT NULL,
    from_state TEXT,                                  -- NULL for the first observation
    to_state   TEXT NOT NULL,
    detail     TEXT
);
CREATE INDEX agent_transitions_agent_at ON agent_transitions (agent, at);

CREATE TABLE agent_health (
    agent             TEXT PRIMARY KEY,
    observed          TEXT NOT NULL,                  -- the latest probe's state
    observed_since    TEXT NOT NULL,
    confirmed         TEXT NOT NULL CHECK (confirmed IN ('unknown', 'up', 'down')),
    confirmed_since   TEXT NOT NULL,
    failures          INTEGER NOT NULL DEFAULT 0,     -- consecutive failed probes
    last_probe_at     TEXT NOT NULL,
    latency_ms        REAL,
    release           TEXT,
    detail            TEXT,
    silenced_until    TEXT,
    silenced_by       TEXT,
    last_reminder_at  TEXT,
    flap_window_start TEXT,
    flap_changes      INTEGER NOT NULL DEFAULT 0,
    flap_alerted      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE alerts (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    agent      TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('down', 'recovered', 'flapping', 'reminder')),
    text       TEXT NOT NULL,
    posted_at  TEXT,                                  -- NULL until it reached Discord
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX alerts_unposted ON alerts (posted_at, id);
