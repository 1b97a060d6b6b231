// psycopg 3 (Debian's python3-psycopg, run by /usr/bin/python3) through a pooled proxy in
// transaction mode, with one pooled backend for four client processes, two of each org:
// prepare_threshold=0 (every statement named and then only bound, wherever the connection lands),
// prepared_max=2 (psycopg deallocates what it evicts), prepare_threshold=None, pipelines of
// five statements prepared and not, and a transaction rolled back, each case checked apart. Each
// answer must be exactly its org's view and carry back its own number; a backend must have served
// both orgs.
// The client program is test/support/python/tx_psycopg.py.
// The proxy is in org mode, or in app mode with PGVPD_TX_DRIVERS_PROXY=app (tx-support.ts;
// app-tx-drivers-python.test.ts runs this file so).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { runTool } from './clients-support.js';
import {
  BackendLog,
  assertSharing,
  jsonLines,
  txFixture,
  withoutPid,
  type Org,
} from './tx-support.js';

const python = '/usr/bin/python3';
const program = fileURLToPath(new URL('../support/python/tx_psycopg.py', import.meta.url));
const hasPsycopg =
  existsSync(python) && (await runTool(python, ['-c', 'import psycopg'])).code === 0;

const x = await txFixture(t, 1);

const cases = [
  'threshold0',
  'evict',
  'unprepared',
  'pipeline-0',
  'pipeline-None',
  'transaction',
] as const;

/** What one process must print for each case, in order, without the pids. */
function expectedLines(org: Org): Record<(typeof cases)[number], unknown[]> {
  const { tenant, rows } = x.expected(org);
  const lines = (kase: string, numbers: number[], seen = rows) =>
    numbers.map((i) => ({ case: kase, i, tenant, rows: seen }));
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  return {
    threshold0: lines('threshold0', range(8)),
    evict: lines('evict', range(9)),
    unprepared: lines('unprepared', range(4)),
    'pipeline-0': lines('pipeline-0', range(5)),
    'pipeline-None': lines('pipeline-None', range(5)),
    transaction: [
      ...lines('transaction', [1, 2], [...rows, 'py-tx'].sort()),
      ...lines('transaction', [3]),
    ],
  };
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
          { PGPASSWORD: x.login(org).password },
          50_000,
        ),
      ),
    );
    const log = new BackendLog();
    for (const [n, run] of runs.entries()) {
      const org = orgs[n]!;
      const lines = jsonLines(run.stdout);
      const expected = expectedLines(org);
      for (const kase of cases) {
        t.same(
          lines.filter((l) => l.case === kase).map(withoutPid),
          expected[kase],
          `${org} process ${String(n)}, ${kase}: every answer its own, only its org’s rows`,
        );
      }
      t.equal(run.stderr, '', `${org} process ${String(n)}: no error output`);
      t.equal(run.code, 0, `${org} process ${String(n)}: exit status 0`);
      const inTransaction = lines.filter((l) => l.case === 'transaction' && l.i !== 3);
      t.equal(
        new Set(inTransaction.map((l) => l.pid)).size,
        1,
        'the transaction stayed on one backend',
      );
      for (const line of lines) if (typeof line.pid === 'number') log.add(org, line.pid);
    }
    assertSharing(t, log, x.poolSize, 'psycopg', false);
  },
);
