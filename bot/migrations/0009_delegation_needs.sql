-- A routed delegation (`auto`) keeps what it needs (comma-separated capabilities): when the agent routing chose does
-- not admit it (503, connection refused), it is routed again among the others instead of waiting for that one.
ALTER TABLE delegations ADD COLUMN needs TEXT;
-- 1 once a request may have reached its agent (a timeout after it went out, a restart mid-send): from then on it
-- stays with that agent, whatever a later try answers; only a request that surely never arrived moves.
ALTER TABLE delegations ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
