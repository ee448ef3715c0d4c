-- A routed delegation (`auto`) keeps what it needs (comma-separated capabilities): when the agent routing chose does
-- not admit it (503, connection refused), it is routed again among the others instead of waiting for that one.
ALTER TABLE delegations ADD COLUMN needs TEXT;
