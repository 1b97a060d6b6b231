// pgJDBC (Debian's libpostgresql-jdbc-java, /usr/share/java/postgresql.jar) through a pooled
// proxy in transaction mode. Four clients, two of each org, over one pooled backend, each on a
// connection with prepareThreshold=1 (named statements from the first execution, then only
// bound), executeBatch in a transaction rolled back, and fetchSize=1 with autocommit off on a
// connection with prepareThreshold=0; then, over two backends, getMetaData() before the first
// execution with the execution forced onto the backend that did not see the describe. Every
// answer must be exactly its org's view and carry back its own number; a backend must have
// served both orgs. The client program is test/support/java/TxJdbc.java, run with Java's
// single-file source launcher (Debian's JRE has the jdk.compiler module it needs).
// The proxy is in org mode, or in app mode with PGVPD_TX_DRIVERS_PROXY=app (tx-support.ts;
// app-tx-drivers-jdbc.test.ts runs this file so).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { runTool } from './clients-support.js';
import {
  BackendLog,
  assertSharing,
  jsonLines,
  transactionMode,
  txFixture,
  type Org,
  type TxFixture,
  withoutPid,
} from './tx-support.js';

const java = '/usr/bin/java';
const jar = '/usr/share/java/postgresql.jar';
const program = fileURLToPath(new URL('../support/java/TxJdbc.java', import.meta.url));
const missing = !existsSync(java)
  ? 'no /usr/bin/java (apt-get install default-jre-headless)'
  : !existsSync(jar)
    ? `no ${jar} (apt-get install libpostgresql-jdbc-java)`
    : false;

function runJava(x: TxFixture, mode: 'matrix' | 'describe') {
  return runTool(
    java,
    ['-cp', jar, program, mode, x.jdbcUrl('acme'), x.f.orgs.acme, x.jdbcUrl('beta'), x.f.orgs.beta],
    {},
    55_000,
  );
}

interface Line {
  client: string;
  case: string;
  i?: number;
  pid?: number;
  tenant?: string;
  rows?: string[];
  columns?: string[];
}

t.test(
  'pgJDBC: prepareThreshold=1, executeBatch and fetchSize, both orgs over one backend',
  { skip: missing },
  async (t) => {
    const x = await txFixture(t, 1);
    const run = await runJava(x, 'matrix');
    t.equal(run.stderr, '', 'no error output');
    t.equal(run.code, 0, 'exit status 0');
    const lines = jsonLines(run.stdout) as unknown as Line[];
    const log = new BackendLog();
    for (const client of ['acme-0', 'acme-1', 'beta-0', 'beta-1']) {
      const org = client.slice(0, 4) as Org;
      const { tenant, rows } = x.expected(org);
      const own = lines.filter((l) => l.client === client);
      t.same(
        own.map(({ case: kase, i, tenant, rows }) => ({ case: kase, i, tenant, rows })),
        [
          ...Array.from({ length: 8 }, (_, i) => ({ case: 'threshold1', i, tenant, rows })),
          { case: 'batch-inside', i: 1, tenant, rows: [...rows, 'jb1', 'jb2', 'jb3'].sort() },
          { case: 'batch-after', i: 2, tenant, rows },
          ...[0, 1, 2].map((i) => ({ case: 'fetch', i, tenant, rows })),
        ],
        `${client}: every answer its own, and only its org’s rows`,
      );
      for (const line of own) log.add(org, line.pid!);
    }
    t.equal(lines.length, 4 * 13, 'nothing else was printed');
    assertSharing(t, log, x.poolSize, 'pgJDBC');
  },
);

t.test(
  'pgJDBC: getMetaData() before execute, the execution on another backend',
  { skip: missing },
  async (t) => {
    const x = await txFixture(t, 2);
    const run = await runJava(x, 'describe');
    t.equal(run.stderr, '', 'no error output');
    t.equal(run.code, 0, 'exit status 0');
    const lines = jsonLines(run.stdout) as unknown as Line[];
    const acme = x.expected('acme');
    const beta = x.expected('beta');
    t.same(
      lines.map(withoutPid),
      [
        { client: 'h1', case: 'hold', i: 0, ...beta },
        {
          client: 'x',
          case: 'metadata',
          columns: ['i:int4', 'pid:int4', 'tenant:text', 'rows:_text'],
        },
        { client: 'h2', case: 'hold', i: 0, ...beta },
        { client: 'x', case: 'execute', i: 1, ...acme },
        { client: 'x', case: 'execute', i: 2, ...acme },
        { client: 'h1', case: 'after', i: 1, ...beta },
      ],
      'the described statement executes, and every answer is its own',
    );
    const pid = (client: string, kase: string, i = 0) =>
      lines.find((l) => l.client === client && l.case === kase && (l.i ?? 0) === i)?.pid;
    if (transactionMode) {
      t.not(pid('h2', 'hold'), pid('h1', 'hold'), 'h1 and h2 held the two backends');
      t.equal(pid('x', 'execute', 1), pid('h1', 'hold'), 'x executed on the backend h1 left');
    } else {
      t.equal(pid('x', 'execute', 1), pid('x', 'execute', 2), 'session mode: x keeps its backend');
    }
  },
);
