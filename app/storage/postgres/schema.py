"""The PostgreSQL schema: versioned migrations, applied at start-up under an advisory
lock, so that instances that start at once against an empty database do it once; each
step is applied in its own transaction and recorded in `schema_migrations`."""

from __future__ import annotations

import psycopg

#: (version, statements): append a step to change the schema; never edit a released one.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE records (
                collection text NOT NULL,
                key text NOT NULL,
                record jsonb NOT NULL,
                expires_at double precision,
                PRIMARY KEY (collection, key)
            )""",
            "CREATE INDEX records_expiry ON records (collection, expires_at) WHERE expires_at IS NOT NULL",
            """CREATE INDEX records_refresh_token_hashes ON records
                USING gin ((record -> 'refresh_token_hashes')) WHERE collection = 'grants'""",
            """CREATE TABLE revisions (
                collection text PRIMARY KEY,
                revision bigint NOT NULL DEFAULT 0
            )""",
        ],
    ),
    (
        2,
        [
            # Short-lived state shared by every instance: authorization codes, pending
            # logins (app/oauth2/codes.py, app/pending.py).
            """CREATE TABLE ephemeral (
                kind text NOT NULL,
                key text NOT NULL,
                value jsonb NOT NULL,
                expires_at double precision NOT NULL,
                PRIMARY KEY (kind, key)
            )""",
            "CREATE INDEX ephemeral_expiry ON ephemeral (expires_at)",
        ],
    ),
    (
        3,
        [
            # A rotation rewrites the grant, so every hash it keeps (up to 21) enters
            # the GIN index again: its pending list makes that cheap, but every lookup
            # scans the whole list, 4 MB by default. 64 kB (the least) measured best.
            "ALTER INDEX records_refresh_token_hashes SET (gin_pending_list_limit = 64)",
            # `revisions` is no longer written (see `revision`); kept for instances of
            # the previous version during a rolling upgrade.
        ],
    ),
    (
        4,
        [
            # Refresh tokens now name their grant and are found by its key; only grants
            # made before keep `refresh_token_hashes` and are searched by hash. The GIN
            # index moves to a column of its own, filled for those grants alone: an
            # index on `record` forbids HOT updates (a new row version in place, no
            # index touched), and every rotation rewrites `record`. For the same reason
            # `expires_at` loses its index (`purge` reads the collection instead), pages
            # keep room for the new version, and a record stays in its row up to 8 kB
            # (a grant with its 21 hashes passes the 2 kB default, and was moved to the
            # TOAST table, and its index, afresh at every rotation).
            """ALTER TABLE records ADD COLUMN refresh_token_hashes jsonb
                GENERATED ALWAYS AS (record -> 'refresh_token_hashes') STORED""",
            "DROP INDEX records_refresh_token_hashes",
            """CREATE INDEX records_searched_refresh_token_hashes ON records
                USING gin (refresh_token_hashes) WITH (gin_pending_list_limit = 64)
                WHERE refresh_token_hashes IS NOT NULL""",
            "DROP INDEX records_expiry",
            "ALTER TABLE records SET (fillfactor = 80, toast_tuple_target = 8160)",
        ],
    ),
    (
        5,
        [
            # The registration caps (app/storage/base.py: `unused_client_network`,
            # `evictable_since`), each a generated column with a partial index, as for
            # `refresh_token_hashes`: an index on `record` would forbid HOT updates.
            # Both stay NULL for every other row, and for a client once it is used.
            """ALTER TABLE records ADD COLUMN unused_client_network text GENERATED ALWAYS AS (
                CASE WHEN collection = 'clients' AND coalesce(record -> 'last_used_at', 'null') = 'null'
                THEN record ->> 'registered_from' END) STORED""",
            """ALTER TABLE records ADD COLUMN evictable_since double precision GENERATED ALWAYS AS (
                CASE WHEN collection = 'clients' AND coalesce(record -> 'last_used_at', 'null') = 'null'
                AND record -> 'resource_server' IS DISTINCT FROM 'true'
                THEN coalesce((record ->> 'created_at')::float8, 0) END) STORED""",
            """CREATE INDEX records_unused_client_network ON records (unused_client_network)
                WHERE unused_client_network IS NOT NULL""",
            "CREATE INDEX records_evictable_since ON records (evictable_since) WHERE evictable_since IS NOT NULL",
        ],
    ),
]
#: advisory lock id of the migrations (the collections' are in store.py: `_collection_lock`)
MIGRATION_LOCK = 0x6D63706F  # "mcpo"


def migrate(conn: psycopg.Connection) -> None:
    """Bring the schema to the newest version (idempotent; safe from several
    instances at once: the first takes the lock and migrates, the others wait and
    find nothing left to do)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, statements in MIGRATIONS:
            if version in done:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))


def schema_version(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0) if row else 0
