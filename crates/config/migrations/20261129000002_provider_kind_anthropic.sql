-- Provider kind `anthropic`: Anthropic's Messages API, which the gateway
-- translates OpenAI chat completions to and from.
--
-- Expand: the kind constraint is replaced by a wider one, in one ALTER
-- (a brief ACCESS EXCLUSIVE lock on providers, under lock_timeout). It is
-- added NOT VALID: every existing row passed the narrower constraint it
-- replaces, so there is nothing to scan for. The previous release never
-- writes the new kind, and the admin refuses to while a gateway of a
-- release that cannot read it is alive (`ProviderKind::since`).
ALTER TABLE providers
    DROP CONSTRAINT providers_kind_known,
    ADD CONSTRAINT providers_kind_known
        CHECK (kind IN ('openai', 'mock', 'anthropic')) NOT VALID;
