// psycopg 3 (Debian's python3-psycopg, run by /usr/bin/python3) through an org-mode proxy in
// transaction mode, with one pooled backend for four client processes, two of each org:
// prepare_threshold=0 (every statement named and then only bound, wherever the connection lands),
// prepared_max=2 (psycopg deallocates what it evicts), prepare_threshold=None, pipelines of
// five statements prepared and not, and a transaction rolled back. Each reported answer must be
// exactly its org's view and carry back its own number; a backend must have served both orgs.
// The client program is test/support/python/tx_psycopg.py.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { runTool } from './clients-support.js';
import { BackendLog, assertSharing, jsonLines, logins, txFixture, type Org } from './tx-support.js';

const python = '/usr/bin/python3';
const program = fileURLToPath(new URL('../support/python/tx_psycopg.py', import.meta.url));
const hasPsycopg =
  existsSync(python) && (await runTool(python, ['-c', 'import psycopg'])).code === 0;

const x = await txFixture(t, 1);

/** What one process must print, in order, without the pids. */
function expectedLines(org: Org) {
  const { tenant, rows } = x.expected(org);
  const lines = (kase: string, numbers: number[], seen = rows) =>
    numbers.map((i) => ({ case: kase, i, tenant, rows: seen }));
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  return [
    ...lines('threshold0', range(8)),
    ...lines('evict', range(9)),
    ...lines('unprepared', range(4)),
    ...lines('pipeline-0', range(5)),
    ...lines('pipeline-None', range(5)),
    ...lines('in-transaction', [1, 2], [...rows, 'py-tx'].sort()),
    ...lines('after-rollback', [3]),
  ];
}

t.test(
  'psycopg 3: four processes of both orgs over one backend see only their org',
  {
    skip: hasPsycopg ? false : 'python3-psycopg is not installed (apt-get install python3-psycopg)',
  },
  async (t) => {
    const orgs: Org[] = ['acme', 'beta', 'acme', 'beta'];
    const runs = await Promise.all(
      orgs.map((org) =>
        runTool(
          python,
          [program, x.conninfo(org), x.f.orgs[org]],
          { PGPASSWORD: logins[org].password },
          50_000,
        ),
      ),
    );
    const log = new BackendLog();
    for (const [n, run] of runs.entries()) {
      const org = orgs[n]!;
      t.equal(run.stderr, '', `${org} process ${String(n)}: no error output`);
      t.equal(run.code, 0, `${org} process ${String(n)}: exit status 0`);
      const lines = jsonLines(run.stdout);
      t.same(
        lines.map(({ case: kase, i, tenant, rows }) => ({ case: kase, i, tenant, rows })),
        expectedLines(org),
        `${org} process ${String(n)}: every answer its own, and only its org’s rows`,
      );
      const inTransaction = lines.filter((l) => l.case === 'in-transaction').map((l) => l.pid);
      t.equal(new Set(inTransaction).size, 1, 'the transaction stayed on one backend');
      for (const line of lines) log.add(org, line.pid as number);
    }
    assertSharing(t, log, x.poolSize, 'psycopg', false);
  },
);
