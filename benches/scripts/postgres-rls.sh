#!/usr/bin/env bash
# A throwaway PostgreSQL for the `postgres_rls`, `durable_insert` and `write_mix` benchmarks,
# on 127.0.0.1 only, with PostgreSQL's defaults (fsync, synchronous_commit = on).
#
#   postgres-rls.sh start USERS [PORT]   install if needed, start, load USERS x 100 rows
#                                        under row-level security; prints the data dir
#   postgres-rls.sh stop DIR             stop that server and delete DIR
#
# Queries run as the login role `tenant`, which only has SELECT/INSERT: RLS is
# bypassed by superusers and by the table's owner. Needs root (to act as the
# `postgres` user), as on these machines and in CI.
set -euo pipefail

pg_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

case "${1:-}" in
start)
    users=${2:?usage: postgres-rls.sh start USERS [PORT]}
    port=${3:-54329}
    bin=$(pg_bin || true)
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        bin=$(pg_bin)
    fi
    dir=$(mktemp -d /tmp/tenantfusion-pg.XXXXXX)
    chown postgres "$dir"
    su postgres -c "$bin/initdb -D $dir/data -A trust -U postgres" >/dev/null
    su postgres -c "$bin/pg_ctl -D $dir/data -o '-c listen_addresses=127.0.0.1 -p $port -k $dir' -l $dir/log -w start" >/dev/null
    "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1 -q >/dev/null <<SQL
CREATE ROLE tenant LOGIN;
CREATE TABLE t (user_id text NOT NULL, id bigint NOT NULL, payload text);
INSERT INTO t
  SELECT 'u' || u, i, 'payload-' || lpad(i::text, 4, '0')
  FROM generate_series(0, $users - 1) AS u, generate_series(0, 99) AS i;
CREATE INDEX t_user_id_id ON t (user_id, id);
ANALYZE t;
ALTER TABLE t ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON t USING (user_id = current_setting('app.uid'));
GRANT SELECT, INSERT ON t TO tenant;
-- For durable_insert: each client writes its own rows (user_id from its
-- session), under the same row-level security as t.
CREATE TABLE notes (
  user_id text NOT NULL DEFAULT current_setting('app.uid'),
  id bigint NOT NULL,
  body text
);
CREATE INDEX notes_user_id_id ON notes (user_id, id);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_notes ON notes USING (user_id = current_setting('app.uid'))
  WITH CHECK (user_id = current_setting('app.uid'));
GRANT SELECT, INSERT ON notes TO tenant;
-- For write_mix: changes by key, each client on its own rows.
CREATE TABLE kv (
  user_id text NOT NULL DEFAULT current_setting('app.uid'),
  id bigint NOT NULL,
  v bigint,
  body text,
  PRIMARY KEY (user_id, id)
);
ALTER TABLE kv ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_kv ON kv USING (user_id = current_setting('app.uid'))
  WITH CHECK (user_id = current_setting('app.uid'));
GRANT SELECT, INSERT, UPDATE, DELETE ON kv TO tenant;
SQL
    echo "$dir"
    ;;
stop)
    dir=${2:?usage: postgres-rls.sh stop DIR}
    bin=$(pg_bin)
    su postgres -c "$bin/pg_ctl -D $dir/data -m fast stop" >/dev/null || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: postgres-rls.sh start USERS [PORT] | stop DIR" >&2
    exit 2
    ;;
esac
