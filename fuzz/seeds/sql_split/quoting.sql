-- comments; strings; dollar quotes
CREATE TABLE "we;ird" (id int, note text DEFAULT 'it''s; fine', x text DEFAULT E'a\'; b');
/* outer /* nested ; */ still ; */
DO $fn$ BEGIN PERFORM 1; RAISE NOTICE '$$;'; END $fn$;
CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2);
CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql
BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END;
PREPARE p AS SELECT $1, U&"d\0061", x'ff', 1.5e-3
