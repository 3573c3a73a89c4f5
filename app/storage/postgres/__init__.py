"""The store interface on PostgreSQL (psycopg 3 and its pool), for deployments that run
several instances against one database (`OAUTH_STORE=postgresql://…`).

Every record is one row of `records` (collection, key, the record as `jsonb`, and when
it expires, computed from the record at each write by the collection's expiry rule),
so expiry is a `WHERE` clause and `purge-expired` one `DELETE`. Each write of one
record is one statement (one round trip, no `BEGIN`/`COMMIT`). A read-modify-write
(`change`) is optimistic: the record is read with its row version (`xmin`, the
transaction that wrote it), changed here, and written back only if that version is
still the row's (compare-and-set); should another writer have come first, the row is
held (`SELECT … FOR UPDATE`) and changed in a transaction. So instances never lose
each other's updates, and in the common case nobody holds a row across a round trip.
`find` on the refresh-token hashes of grants made before refresh tokens named their
grant goes through a GIN index on a column generated from them, and `revision` is a
digest of the collection's keys and row versions.

A refresh reads its client and grant, then rewrites the grant: two round trips. An
instance usually served the last refresh of that grant too, and so knows both rows as
they are (`KnownRows`): `read_ahead(…, assume_known=True)` then makes no read, and the
rewrite's compare-and-set checks both row versions in its one statement. Whatever a
block decides on an assumed row that another instance changed meanwhile is never
written: any other write, and the block's end, check the rows first (`StaleRead`).

`lock()` (the operator's restore, merged under every collection) is an exclusive
advisory lock per collection; every write takes the shared one within its statement.

The schema is created and migrated at start-up under an advisory lock, so instances
that start at once against an empty database do it once: versioned, each step applied
in its own transaction and recorded in `schema_migrations`.

Anything that goes wrong with the database (it is down, restarting, unreachable)
raises `StoreError`, which the app answers with 503; the pool reconnects by itself.

One module per concern: `schema` (the migrations), `connections` (the pool and the
connection each thread keeps), `known` (the rows remembered for `assume_known`),
`store` (`PostgresStore`: the records) and `shared` (`PostgresSharedState`: the
short-lived state every instance shares, table `ephemeral`).
"""

from .schema import MIGRATIONS
from .shared import EPHEMERAL_GRACE, PostgresSharedState
from .store import PostgresStore

__all__ = ["EPHEMERAL_GRACE", "MIGRATIONS", "PostgresSharedState", "PostgresStore"]
