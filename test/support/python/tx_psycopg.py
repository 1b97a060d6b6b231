"""psycopg 3 as one client of the transaction-mode driver matrix (test/proxy/tx-drivers-python.test.ts).

Usage: tx_psycopg.py <conninfo> <org id>; the password comes from PGPASSWORD. Runs every case
below on connections to the proxy and prints, for each statement that reports what it saw, one
JSON line {"case", "i", "pid", "tenant", "rows"}. It asserts nothing: the test compares each line
with what the org must see. Any exception ends it with a traceback and a non-zero status.
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


# Every statement prepared from its first execution (names _pg3_0, _pg3_1, ...), then only bound:
# a later execution may land on a backend that never saw the Parse.
with connect(prepare_threshold=0) as conn:
    for i in range(8):
        report("threshold0", conn.execute(VIEW, (i,)).fetchone())

# At most two prepared statements: the third text evicts the oldest, which psycopg deallocates
# (DEALLOCATE _pg3_N) on whatever backend the connection has at that moment.
with connect(prepare_threshold=0) as conn:
    conn.prepared_max = 2
    variants = [VIEW, VIEW + " -- two", VIEW + " -- three"]
    for i in range(9):
        report("evict", conn.execute(variants[i % 3], (i,)).fetchone())

# Never prepared (the setting poolers used to require).
with connect(prepare_threshold=None) as conn:
    for i in range(4):
        report("unprepared", conn.execute(VIEW, (i,)).fetchone())

# A pipeline: five statements sent before the first answer is read, prepared and not.
for threshold in (0, None):
    with connect(prepare_threshold=threshold) as conn:
        with conn.pipeline():
            cursors = [conn.execute(VIEW, (i,)) for i in range(5)]
        for cur in cursors:
            report(f"pipeline-{threshold}", cur.fetchone())

# A transaction: its own insert is visible inside, rolled back after.
with connect(prepare_threshold=0) as conn:
    with conn.transaction(force_rollback=True):
        conn.execute(
            "insert into public.docs (org_id, body) values (%s, %s)", (ORG_ID, "py-tx")
        )
        report("in-transaction", conn.execute(VIEW, (1,)).fetchone())
        report("in-transaction", conn.execute(VIEW, (2,)).fetchone())
    report("after-rollback", conn.execute(VIEW, (3,)).fetchone())
