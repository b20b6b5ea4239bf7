-- The release schema of each node: the newest migration its binary embeds,
-- which is what that release needs the database to keep. `obleth-migrator
-- down` refuses to revert a migration a live node's release requires.
--
-- Expand: a nullable column without a default changes only the catalog
-- (a brief ACCESS EXCLUSIVE lock on nodes, under lock_timeout). The
-- previous release never names it, so its registrations leave it NULL,
-- which `down` reads as "may need every migration".
ALTER TABLE nodes ADD COLUMN release_schema BIGINT;
