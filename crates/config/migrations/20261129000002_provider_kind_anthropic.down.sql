-- Reverts 20261129000002_provider_kind_anthropic.sql. A provider of kind
-- `anthropic` would stop every gateway of the previous release from
-- loading the catalog, so the revert refuses while one exists: delete it
-- (or change its kind) first. Only the catalog changes otherwise (a brief
-- ACCESS EXCLUSIVE lock on providers, under lock_timeout).
DO $$
DECLARE
    names TEXT;
BEGIN
    SELECT string_agg(name, ', ' ORDER BY name) INTO names
    FROM providers WHERE kind = 'anthropic';
    IF names IS NOT NULL THEN
        RAISE EXCEPTION 'providers of kind anthropic exist (%), which the previous release cannot read; delete them or change their kind first', names;
    END IF;
END
$$;

-- Validated as the original was (providers holds a handful of rows; the
-- check above found none it would refuse).
ALTER TABLE providers
    DROP CONSTRAINT providers_kind_known,
    ADD CONSTRAINT providers_kind_known
        CHECK (kind IN ('openai', 'mock')) NOT VALID;
ALTER TABLE providers VALIDATE CONSTRAINT providers_kind_known;
