"""obleth's database for the benchmark: migrations through obleth-migrator, then
providers, routes and keys written with the SQL that `obleth_config::db` runs
(docs/gateway.md), each change with its `changes` row and notification."""

import os
import subprocess

# obleth_config::db::changes::CHANGES_LOCK_KEY, 0x6f62_6c65_7468_0002.
CHANGES_LOCK_KEY = 0x6F62_6C65_7468_0002


def migrate(bins, url):
    """`bins`: a directory holding obleth-migrator, or the binary itself."""
    migrator = os.path.join(bins, "obleth-migrator") if os.path.isdir(bins) else bins
    out = subprocess.run([migrator, "up", "--database-url", url],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"obleth-migrator up failed:\n{out.stdout}{out.stderr}")


def stats_database(cluster, db, bins, upstream_port):
    """Starts `cluster` with pg_stat_statements (`track = top`: the statements
    the gateway sends, not the ones a trigger or function runs inside them),
    creates `db` with the extension, migrates it with `bins`' migrator and
    adds the catalog pointing at `upstream_port`; answers its URL."""
    cluster.start("shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = top\n")
    url = cluster.create_database(db)
    cluster.psql(db, "CREATE EXTENSION pg_stat_statements")
    migrate(bins, url)
    add_catalog(cluster, db, upstream_port)
    return url


def record_change(entity, entity_id_sql, op):
    """What `record_change` does, as SQL that ends a transaction's work: the
    lock, the change row, and the notification with its JSON payload
    (`{"seq":..,"entity":..,"id":..,"op":..}`)."""
    return (
        f"SELECT pg_advisory_xact_lock({CHANGES_LOCK_KEY});\n"
        f"WITH c AS (INSERT INTO changes (entity, entity_id, op) "
        f"SELECT '{entity}', ({entity_id_sql}), '{op}' RETURNING seq, entity_id)\n"
        f"SELECT pg_notify('obleth_changes', json_build_object("
        f"'seq', seq, 'entity', '{entity}', 'id', entity_id, 'op', '{op}')::text) FROM c;\n"
    )


def add_catalog(cluster, db, mock_port):
    """Provider `mock` (kind openai, over HTTP to the upstream on `mock_port`) and route gpt-4o-mini."""
    cluster.psql(db, (
        "BEGIN;\n"
        "INSERT INTO providers (id, name, kind, base_url, credential_ref, timeout_ms) "
        f"VALUES (gen_random_uuid(), 'mock', 'openai', 'http://127.0.0.1:{mock_port}/v1', NULL, 10000);\n"
        "INSERT INTO routes (id, model) VALUES (gen_random_uuid(), 'gpt-4o-mini');\n"
        "INSERT INTO route_targets (route_id, position, provider_id) "
        "SELECT r.id, 0, p.id FROM routes r, providers p WHERE r.model = 'gpt-4o-mini' AND p.name = 'mock';\n"
        + record_change("route", "SELECT id::text FROM routes WHERE model = 'gpt-4o-mini'", "insert")
        + "COMMIT;\n"
    ))


def point_provider(cluster, db, port):
    """Points provider `mock` at the upstream on `port`, with its change row
    (for a gateway started afterwards, which reads the catalog at start)."""
    cluster.psql(db, (
        "BEGIN;\n"
        f"UPDATE providers SET base_url = 'http://127.0.0.1:{port}/v1' WHERE name = 'mock';\n"
        + record_change("provider", "SELECT id::text FROM providers WHERE name = 'mock'", "update")
        + "COMMIT;\n"
    ))


def add_key(cluster, db, public_id, secret_sha256, name, rpm_limit):
    cluster.psql(db, (
        "BEGIN;\n"
        "INSERT INTO api_keys (id, public_id, secret_hash, name, rpm_limit) "
        f"VALUES (gen_random_uuid(), '{public_id}', decode('{secret_sha256}', 'hex'), '{name}', {rpm_limit});\n"
        + record_change("api_key", f"SELECT id::text FROM api_keys WHERE public_id = '{public_id}'", "insert")
        + "COMMIT;\n"
    ))


# Keys made in bulk have a secret derived from their number, so a test can
# present any of them: public id PREFIX + 11 digits (12 characters), secret
# 'Sec' + 37 digits (40 characters).
def bulk_public_id(prefix, i):
    return f"{prefix}{i:011d}"


def bulk_secret(i):
    return f"Sec{i:037d}"


def bulk_key(prefix, i):
    return f"obk_{bulk_public_id(prefix, i)}_{bulk_secret(i)}"


def insert_bulk_keys(cluster, db, prefix, first, last, rpm_limit=600):
    """Keys number `first` to `last` in one INSERT ... generate_series, with a
    policy like a real key's (an allowed-models list and a rate limit). No
    change rows: the gateways read them at warm-up."""
    cluster.psql(db, (
        "INSERT INTO api_keys (id, public_id, secret_hash, name, owner, allowed_models, rpm_limit) "
        f"SELECT gen_random_uuid(), '{prefix}' || lpad(i::text, 11, '0'), "
        "sha256(convert_to('Sec' || lpad(i::text, 37, '0'), 'UTF8')), "
        "'bulk-' || i, 'team-' || (i % 1000), ARRAY['gpt-4o*', 'text-embedding-*'], "
        f"{rpm_limit} FROM generate_series({first}, {last}) AS i;\n"
        "ANALYZE api_keys;\n"
    ))


def revoke_sql(public_id):
    """`obleth_config::db::keys::revoke_key` as SQL: the UPDATE, then the change
    row and notification, in one transaction."""
    return (
        "BEGIN;\n"
        "UPDATE api_keys SET revoked_at = now(), updated_at = now() "
        f"WHERE public_id = '{public_id}' AND revoked_at IS NULL;\n"
        + record_change("api_key", f"SELECT id::text FROM api_keys WHERE public_id = '{public_id}'", "update")
        + "COMMIT;\n"
    )
