"""psycopg 3 as one client of the transaction-mode driver matrix (test/proxy/tx-drivers-python.test.ts).

Usage: tx_psycopg.py <conninfo> <org id>; the password comes from PGPASSWORD. Runs every case
below on connections of its own to the proxy and prints, for each statement that reports what it
saw, one JSON line {"case", "i", "pid", "tenant", "rows"}. It asserts nothing: the test compares
each line with what the org must see. A case that raises a psycopg error prints
{"case", "error": "<SQLSTATE>: <message>"} instead of its remaining lines, the other cases still
run, and the exit status is 1.
"""

import json
import sys

import psycopg

CONNINFO, ORG_ID = sys.argv[1], sys.argv[2]

# The number i comes back with the answer, so each answer can be matched with its question.
VIEW = """select %s::int as i, pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant,
  array(select body from public.docs order by body) as rows"""


def report(case, row):
    i, pid, tenant, rows = row
    print(json.dumps({"case": case, "i": i, "pid": pid, "tenant": tenant, "rows": rows}), flush=True)


def connect(**kwargs):
    return psycopg.connect(CONNINFO, autocommit=True, **kwargs)


def threshold0():
    """Every statement prepared from its first execution (_pg3_0, ...), then only bound: a later
    execution may land on a backend that never saw the Parse."""
    with connect(prepare_threshold=0) as conn:
        for i in range(8):
            report("threshold0", conn.execute(VIEW, (i,)).fetchone())


def evict():
    """At most two prepared statements: the third text evicts the oldest, which psycopg 3.1
    deallocates with SQL (DEALLOCATE _pg3_N) on whatever backend the connection has then.
    (prepared_max=None, "no limit", is psycopg 3.2's; 3.1 raises TypeError on it.)"""
    with connect(prepare_threshold=0) as conn:
        conn.prepared_max = 2
        variants = [VIEW, VIEW + " -- two", VIEW + " -- three"]
        for i in range(9):
            report("evict", conn.execute(variants[i % 3], (i,)).fetchone())


def unprepared():
    """Never prepared (the setting poolers used to require)."""
    with connect(prepare_threshold=None) as conn:
        for i in range(4):
            report("unprepared", conn.execute(VIEW, (i,)).fetchone())


def pipeline(threshold):
    """Five statements sent before the first answer is read."""
    with connect(prepare_threshold=threshold) as conn:
        with conn.pipeline():
            cursors = [conn.execute(VIEW, (i,)) for i in range(5)]
        for cur in cursors:
            report(f"pipeline-{threshold}", cur.fetchone())


def transaction():
    """Its own insert is visible inside (i = 1, 2), rolled back after (i = 3)."""
    with connect(prepare_threshold=0) as conn:
        with conn.transaction(force_rollback=True):
            conn.execute(
                "insert into public.docs (org_id, body) values (%s, %s)", (ORG_ID, "py-tx")
            )
            report("transaction", conn.execute(VIEW, (1,)).fetchone())
            report("transaction", conn.execute(VIEW, (2,)).fetchone())
        report("transaction", conn.execute(VIEW, (3,)).fetchone())


failed = False
for name, case in [
    ("threshold0", threshold0),
    ("evict", evict),
    ("unprepared", unprepared),
    ("pipeline-0", lambda: pipeline(0)),
    ("pipeline-None", lambda: pipeline(None)),
    ("transaction", transaction),
]:
    try:
        case()
    except psycopg.Error as e:
        failed = True
        print(json.dumps({"case": name, "error": f"{e.sqlstate}: {e}"}), flush=True)
sys.exit(1 if failed else 0)
