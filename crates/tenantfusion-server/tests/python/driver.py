"""psycopg 3 against a tenantfusion server: SCRAM logins, parameterised
statements, SQLSTATEs, a driver's transactions, and live queries in both
shapes (COPY (SUBSCRIBE ...) TO STDOUT and a streamed SUBSCRIBE).

Run by the Rust test `python::psycopg_drives_the_server` with the
server's host and port; users alice and bob and table app.notes exist.
Prints one line per check; any failure raises (exit status 1).
"""

import sys
import threading

import psycopg
from psycopg import errors

HOST, PORT = sys.argv[1], int(sys.argv[2])


def connect(user, password, autocommit=True):
    return psycopg.connect(
        host=HOST,
        port=PORT,
        user=user,
        password=password,
        dbname="tenantfusion",
        autocommit=autocommit,
        connect_timeout=10,
    )


alice = connect("alice", "alice-pw")
bob = connect("bob", "bob-pw")
print("scram login: ok")

with alice.cursor() as cur:
    cur.execute("INSERT INTO app.notes VALUES (%s, %s)", (1, "from python"))
    cur.execute("SELECT id, body FROM app.notes WHERE id = %s", (1,))
    assert cur.fetchall() == [(1, "from python")], "alice reads her row back"
with bob.cursor() as cur:
    cur.execute("SELECT count(*) FROM app.notes")
    assert cur.fetchone() == (0,), "bob sees none of alice's rows"
print("parameterised insert/select: ok")

try:
    alice.execute("SELECT * FROM app.missing")
    raise AssertionError("a missing table was found")
except errors.UndefinedTable as err:
    assert err.sqlstate == "42P01", err.sqlstate
    assert "TABLE_NOT_FOUND" in str(err), str(err)
try:
    alice.execute("INSERT INTO app.notes VALUES (%s, %s)", (1, "again"))
    raise AssertionError("a duplicate key was accepted")
except errors.UniqueViolation as err:
    assert err.sqlstate == "23505", err.sqlstate
print("sqlstate: ok")

try:
    connect("alice", "wrong")
    raise AssertionError("a wrong password was accepted")
except psycopg.OperationalError as err:
    assert "password authentication failed" in str(err), str(err)
print("wrong password refused: ok")

# psycopg's default: a transaction opened by BEGIN, ended by commit().
tx = connect("alice", "alice-pw", autocommit=False)
tx.execute("INSERT INTO app.notes VALUES (%s, %s)", (2, "in a transaction"))
tx.commit()
tx.close()
print("driver transaction: ok")

writer = connect("alice", "alice-pw")


def write_later(row_id, body):
    # Written once the reader has taken the snapshot.
    threading.Timer(0.3, lambda: writer.execute(
        "INSERT INTO app.notes VALUES (%s, %s)", (row_id, body))).start()


# COPY (SUBSCRIBE ...) TO STDOUT: text rows as they happen.
reader = connect("alice", "alice-pw")
events = []
try:
    with reader.cursor() as cur:
        with cur.copy("COPY (SUBSCRIBE TO app.notes) TO STDOUT") as copy:
            rows = copy.rows()
            events.append(next(rows))
            events.append(next(rows))
            write_later(3, "live copy")
            events.append(next(rows))
            reader.cancel()
            for _ in rows:
                pass
    raise AssertionError("the live query ended without its cancel")
except errors.QueryCanceled:
    pass
assert sorted(events[:2]) == [
    ("snapshot", "1", "from python"),
    ("snapshot", "2", "in a transaction"),
], events
assert events[2] == ("insert", "3", "live copy"), events
print("subscribe by copy: ok")

# SUBSCRIBE as a streamed result: typed rows as they happen.
reader = connect("alice", "alice-pw")
streamed = []
try:
    with reader.cursor() as cur:
        for row in cur.stream("SUBSCRIBE TO app.notes WHERE id > 2"):
            streamed.append(row)
            if len(streamed) == 1:
                write_later(4, "live stream")
            if len(streamed) == 2:
                reader.cancel()
    raise AssertionError("the live query ended without its cancel")
except errors.QueryCanceled:
    pass
assert streamed == [("snapshot", 3, "live copy"), ("insert", 4, "live stream")], streamed
print("subscribe by stream: ok")
