-- Delegation chains (docs/delegation-chains.md): a delegation an agent makes while working on one it received
-- is that one's child. A person's delegation (and an agent's own, unparented one) is a root: depth 1, itself.
ALTER TABLE delegations ADD COLUMN parent_id INTEGER REFERENCES delegations (id);
ALTER TABLE delegations ADD COLUMN root_id INTEGER;
ALTER TABLE delegations ADD COLUMN depth INTEGER NOT NULL DEFAULT 1;
ALTER TABLE delegations ADD COLUMN cancelled_at TEXT;              -- its chain was cancelled from here: no new children
UPDATE delegations SET root_id = id WHERE root_id IS NULL;
CREATE INDEX delegations_root ON delegations (root_id, id);
