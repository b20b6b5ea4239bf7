-- Reverts 20261129000003_provider_options_target_weights.sql. Dropping the
-- columns would silently lose settings the operator made (a credential
-- pool, a CA bundle, weights), and a provider of a kind the previous
-- release cannot read would stop its gateways from loading the catalog; so
-- the revert refuses while any exist: clear them first. Otherwise only the
-- catalog changes (a brief ACCESS EXCLUSIVE lock per table, under
-- lock_timeout). The kind constraint goes back as 20261129000002 left it:
-- NOT VALID (the check above found no row it would refuse).
DO $$
DECLARE
    names TEXT;
BEGIN
    SELECT string_agg(name, ', ' ORDER BY name) INTO names
    FROM providers WHERE kind IN ('azure', 'bedrock', 'gemini', 'vertex') OR options <> '{}'::jsonb;
    IF names IS NOT NULL THEN
        RAISE EXCEPTION 'providers with options or of a kind the previous release cannot read exist (%); clear their options or delete them first', names;
    END IF;
    SELECT string_agg(DISTINCT r.model, ', ' ORDER BY r.model) INTO names
    FROM route_targets t JOIN routes r ON r.id = t.route_id
    WHERE t.weight <> 1 OR t.priority IS NOT NULL;
    IF names IS NOT NULL THEN
        RAISE EXCEPTION 'routes with target weights or priorities exist (%); reset them first', names;
    END IF;
END
$$;

ALTER TABLE route_targets
    DROP CONSTRAINT route_targets_weight_range,
    DROP COLUMN priority,
    DROP COLUMN weight;

ALTER TABLE providers
    DROP CONSTRAINT providers_options_object,
    DROP COLUMN options,
    DROP CONSTRAINT providers_kind_known,
    ADD CONSTRAINT providers_kind_known
        CHECK (kind IN ('openai', 'mock', 'anthropic')) NOT VALID;
