// libpq's tools through a pooled proxy in transaction mode, with one pooled backend for all
// clients: psql processes of both orgs at once (single statements and an explicit transaction),
// and two pgbench processes at once, one per org, in the simple, extended and prepared query
// modes, each transaction of which checks its org's view and fails on anything else. A backend
// must have served both orgs (see tx-support.ts for the session-mode run of the same plumbing).
// The proxy is in org mode, or in app mode with PGVPD_TX_DRIVERS_PROXY=app (tx-support.ts;
// app-tx-drivers-libpq.test.ts runs this file so).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { runTool, type ToolResult } from './clients-support.js';
import { BackendLog, assertSharing, txFixture, viewSql, type Org } from './tx-support.js';

const psqlBin = '/usr/bin/psql';
const pgbenchBin = '/usr/bin/pgbench';

const x = await txFixture(t, 1);
const scratch = mkdtempSync(join(tmpdir(), 'pgvpd-tx-libpq-'));
t.teardown(() => {
  rmSync(scratch, { recursive: true, force: true });
});

function psql(org: Org, commands: string[]): Promise<ToolResult> {
  return runTool(
    psqlBin,
    [
      '-X',
      '-q',
      '-A',
      '-t',
      '-F',
      '|',
      '-v',
      'ON_ERROR_STOP=1',
      ...commands.flatMap((c) => ['-c', c]),
      x.conninfo(org),
    ],
    { PGPASSWORD: x.login(org).password },
  );
}

/** psql's unaligned line of viewSql: pid|tenant|{rows}, without the pid. */
const line = (org: Org, rows = x.expected(org).rows) => `${x.f.orgs[org]}|{${rows.join(',')}}`;

t.test('psql: four processes of both orgs over one backend each see only their org', async (t) => {
  const orgs: Org[] = ['acme', 'beta', 'acme', 'beta'];
  const runs = await Promise.all(orgs.map((org) => psql(org, Array(10).fill(viewSql) as string[])));
  const log = new BackendLog();
  for (const [n, run] of runs.entries()) {
    const org = orgs[n]!;
    t.equal(run.stderr, '', `${org}: no error output`);
    t.equal(run.code, 0, `${org}: exit code 0`);
    const lines = run.stdout.trimEnd().split('\n');
    t.same(
      lines.map((l) => l.slice(l.indexOf('|') + 1)),
      Array(10).fill(line(org)),
      `${org}: ten statements, each its org’s view`,
    );
    for (const l of lines) log.add(org, Number(l.slice(0, l.indexOf('|'))));
  }
  assertSharing(t, log, x.poolSize, 'psql');
});

t.test(
  'psql: a transaction sees its own insert, beta never does, rollback undoes it',
  async (t) => {
    const insert = `insert into public.docs (org_id, body) values ('${x.f.orgs.acme}', 'psql-tx')`;
    const [acme, ...betas] = await Promise.all([
      psql('acme', [
        'begin',
        insert,
        viewSql,
        'select pg_sleep(0.2)',
        viewSql,
        'rollback',
        viewSql,
      ]),
      ...[0, 1, 2].map(() => psql('beta', [viewSql, viewSql])),
    ]);
    t.equal(acme.stderr, '');
    t.equal(acme.code, 0);
    const lines = acme.stdout.trimEnd().split('\n');
    const pids = [lines[0]!, lines[2]!].map((l) => l.slice(0, l.indexOf('|')));
    t.same(
      lines.map((l) => l.slice(l.indexOf('|') + 1)),
      [
        line('acme', ['a1', 'a2', 'psql-tx']),
        '',
        line('acme', ['a1', 'a2', 'psql-tx']),
        line('acme'),
      ],
      'inside: three rows; after the rollback: two',
    );
    t.equal(pids[0], pids[1], 'the transaction stayed on one backend');
    for (const beta of betas) {
      t.equal(beta.code, 0, beta.stderr);
      t.same(
        beta.stdout
          .trimEnd()
          .split('\n')
          .map((l) => l.slice(l.indexOf('|') + 1)),
        [line('beta'), line('beta')],
        'beta saw beta',
      );
    }
  },
);

t.test('pgbench: two orgs at once in simple, extended and prepared mode', async (t) => {
  // Each transaction records its backend (one statement: the check and the record run in one
  // transaction) and divides by zero unless it sees exactly its org's rows, tenant and user.
  await x.f.db.query(`
    create table public.tx_seen (org text not null, pid int not null);
    grant insert on public.tx_seen to ${x.f.connectAs};`);
  const script = (org: Org) => {
    const path = join(scratch, `${org}.sql`);
    const id = x.f.orgs[org];
    writeFileSync(
      path,
      [
        `with seen as (insert into public.tx_seen values ('${org}', pg_backend_pid()) returning 1) select (select count(*) from seen) as recorded, count(*) as n, count(*) filter (where org_id <> '${id}') as foreign_rows, coalesce(pgvpd.current_tenant_id(), '') = '${id}' and coalesce(pgvpd.context('user'), '') = 'alice' as is_org from public.docs \\gset`,
        `\\if :foreign_rows != 0 or :n != ${String(x.expected(org).rows.length)} or not :is_org or :recorded != 1`,
        'select 1 / 0;',
        '\\endif',
        '',
      ].join('\n'),
    );
    return path;
  };
  const scripts = { acme: script('acme'), beta: script('beta') };
  const pgbench = (org: Org, args: string[]) =>
    runTool(pgbenchBin, [...args, x.conninfo(org)], { PGPASSWORD: x.login(org).password }, 60_000);

  for (const mode of ['simple', 'extended', 'prepared']) {
    await x.f.db.query('truncate public.tx_seen');
    const args = ['-n', '-c', '2', '-j', '1', '-t', '50', '-M', mode];
    const runs = await Promise.all(
      (['acme', 'beta'] as const).map((org) => pgbench(org, [...args, '-f', scripts[org]])),
    );
    for (const [n, run] of runs.entries()) {
      const org = n === 0 ? 'acme' : 'beta';
      t.equal(run.code, 0, `${org} -M ${mode}: exit status 0 (${run.stderr})`);
      t.match(run.stdout, `query mode: ${mode}\n`);
      t.match(run.stdout, '\nnumber of transactions actually processed: 100/100\n');
      t.match(run.stdout, '\nnumber of failed transactions: 0 (0.000%)\n');
    }
    const seen = await x.f.db.query<{ org: Org; pid: number }>('select org, pid from tx_seen');
    t.equal(seen.rows.length, 200, `-M ${mode}: every transaction recorded its backend`);
    const log = new BackendLog();
    for (const { org, pid } of seen.rows) log.add(org, pid);
    assertSharing(t, log, x.poolSize, `pgbench -M ${mode}`);
  }

  // The check does detect another org's view: beta running acme's script fails at once.
  const wrong = await pgbench('beta', ['-n', '-c', '1', '-t', '5', '-f', scripts.acme]);
  t.equal(wrong.code, 2);
  t.match(wrong.stderr, 'division by zero');
});
