-- Provider options and weighted targets (0.3.0).
--
-- providers.options: what a provider needs beyond its URL and credential,
-- as one JSON object the gateway reads (a pool of further credentials used
-- in turn, connect / first-byte / idle timeouts, a CA bundle and a client
-- certificate for TLS, and a kind's own settings such as Azure's
-- api-version); unknown members are ignored by a release that does not
-- know them. route_targets.weight and .priority: targets of the same
-- priority share requests by weight; a lower priority is tried first; a
-- target without a priority is tried in its position, as before.
--
-- The kind constraint also admits the kinds this line of releases adds
-- (azure, bedrock, gemini, vertex), so each needs no migration of its own;
-- the admin accepts a kind only once the gateways can serve it.
--
-- Expand: columns with constant defaults (no rewrite in PostgreSQL 11+),
-- constraints added NOT VALID (every existing row has the default), one
-- brief ACCESS EXCLUSIVE lock per table under lock_timeout. The previous
-- release names its columns and writes neither new column; its rows get
-- the defaults, which mean what it meant.
ALTER TABLE providers
    ADD COLUMN options JSONB NOT NULL DEFAULT '{}'::jsonb,
    ADD CONSTRAINT providers_options_object CHECK (jsonb_typeof(options) = 'object') NOT VALID,
    DROP CONSTRAINT providers_kind_known,
    ADD CONSTRAINT providers_kind_known
        CHECK (kind IN ('openai', 'mock', 'anthropic', 'azure', 'bedrock', 'gemini', 'vertex')) NOT VALID;

ALTER TABLE route_targets
    ADD COLUMN weight INTEGER NOT NULL DEFAULT 1,
    ADD COLUMN priority INTEGER,
    ADD CONSTRAINT route_targets_weight_range CHECK (weight BETWEEN 0 AND 1000000) NOT VALID;
