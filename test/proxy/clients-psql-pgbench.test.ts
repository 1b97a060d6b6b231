// libpq's own tools through the app-mode proxy against a real PostgreSQL: psql (queries, \copy
// both ways, the proxy's refusal of a bad username) and pgbench in all three query modes.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { TestLike } from '../support/postgres.js';
import { runTool, type ToolResult } from './clients-support.js';
import { proxyFixture, type ProxyFixture } from './fixture.js';

const psqlBin = '/usr/bin/psql';
const pgbenchBin = '/usr/bin/pgbench';

/** conninfo through the proxy without a password: the tools get it from PGPASSWORD. */
function conninfo(f: ProxyFixture, user: string): string {
  return `host=127.0.0.1 port=${String(f.proxy.port)} dbname=${f.db.name} user=${user}`;
}

/** psql -X -A -t with one -c per command, as `user` through the proxy. */
function psql(
  f: ProxyFixture,
  user: string,
  commands: string[],
  password = f.app.password,
): Promise<ToolResult> {
  return runTool(
    psqlBin,
    [
      '-X',
      '-A',
      '-t',
      '-v',
      'ON_ERROR_STOP=1',
      ...commands.flatMap((c) => ['-c', c]),
      conninfo(f, user),
    ],
    { PGPASSWORD: password },
  );
}

function scratchDir(t: TestLike): string {
  const dir = mkdtempSync(join(tmpdir(), 'pgvpd-clients-'));
  t.teardown(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

const perTenant =
  "select coalesce(string_agg(tenant_id || '=' || n, ' ' order by tenant_id), 'none') from (select tenant_id, count(*) as n from public.notes group by 1) c";

t.test('psql through the proxy: each tenant sees only its rows', async (t) => {
  const f = await proxyFixture(t);
  for (const [tenant, expected] of [
    ['acme', 'acme=2'],
    ['globex', 'globex=3'],
    ['initech', 'none'],
  ] as const) {
    const result = await psql(f, f.userFor(tenant), [
      perTenant,
      'select pgvpd.current_tenant_id()',
    ]);
    t.equal(result.stderr, '', `${tenant}: no error output`);
    t.equal(result.code, 0, `${tenant}: exit code 0`);
    t.equal(result.stdout, `${expected}\n${tenant}\n`, `${tenant}: sees ${expected}`);
  }
});

t.test('psql \\copy out returns only the own rows and \\copy in loads them', async (t) => {
  const f = await proxyFixture(t);
  const dir = scratchDir(t);
  const out = join(dir, 'out.csv');
  const user = f.userFor('globex');
  const copied = await psql(f, user, [
    `\\copy (select tenant_id, body from public.notes order by id) to '${out}' with (format csv)`,
  ]);
  t.equal(copied.stderr, '');
  t.equal(copied.code, 0);
  t.equal(copied.stdout, 'COPY 3\n');
  t.equal(readFileSync(out, 'utf8'), 'globex,g1\nglobex,g2\nglobex,g3\n');

  const rows = 2000;
  const input = join(dir, 'in.csv');
  writeFileSync(
    input,
    Array.from({ length: rows }, (_, i) => `globex,loaded ${String(i)}\n`).join(''),
  );
  // COPY FROM into a table under row-level security is refused by PostgreSQL (0A000) …
  const direct = await psql(f, user, [
    `\\copy public.notes (tenant_id, body) from '${input}' with (format csv)`,
  ]);
  t.equal(direct.code, 1);
  t.match(direct.stderr, /ERROR: {2}COPY FROM not supported with row-level security/);
  // … so psql loads a staging table and inserts from it, under the policy.
  const loaded = await psql(f, user, [
    'create temp table staging (tenant_id text, body text)',
    `\\copy staging from '${input}' with (format csv)`,
    'insert into public.notes (tenant_id, body) select tenant_id, body from staging',
    perTenant,
  ]);
  t.equal(loaded.stderr, '');
  t.equal(loaded.code, 0);
  t.equal(
    loaded.stdout,
    `CREATE TABLE\nCOPY ${String(rows)}\nINSERT 0 ${String(rows)}\nglobex=${String(rows + 3)}\n`,
  );
  const all = await f.db.query<{ tenant_id: string; n: number }>(
    'select tenant_id, count(*)::int as n from public.notes group by 1 order by 1',
  );
  t.same(all.rows, [
    { tenant_id: 'acme', n: 2 },
    { tenant_id: 'globex', n: rows + 3 },
  ]);
});

t.test('psql shows the proxy refusal of a bad username and exits with 2', async (t) => {
  const f = await proxyFixture(t);
  const badTenant = `${f.app.name}.bad!tenant`;
  const bad = await psql(f, badTenant, ['select 1']);
  t.equal(bad.code, 2);
  t.equal(bad.stdout, '');
  t.match(
    bad.stderr,
    `FATAL:  invalid pgvpd username "${badTenant}": tenant does not match ^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`,
  );
  t.match(bad.stderr, `HINT:  Connect as <role>.<tenant>, e.g. "app_user.acme"`);

  const noTenant = await psql(f, f.app.name, ['select 1']);
  t.equal(noTenant.code, 2);
  t.match(
    noTenant.stderr,
    `FATAL:  invalid pgvpd username "${f.app.name}": no tenant (missing ".")`,
  );

  // A wrong password is PostgreSQL's own refusal, relayed for the rewritten role.
  const wrong = await psql(f, f.userFor('acme'), ['select 1'], 'not-the-password');
  t.equal(wrong.code, 2);
  t.match(wrong.stderr, `FATAL:  password authentication failed for user "${f.app.name}"`);
});

t.test('pgbench runs through the proxy in simple, extended and prepared mode', async (t) => {
  const f = await proxyFixture(t);
  const init = await runTool(pgbenchBin, ['-i', '-s', '1', '-q', '-I', 'dtGvp', f.db.url]);
  t.equal(init.code, 0, `pgbench -i: ${init.stderr}`);
  await f.db.query(
    `grant select, insert, update on pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history to ${f.app.name}`,
  );
  const env = { PGPASSWORD: f.app.password };
  const target = conninfo(f, f.userFor('acme'));
  for (const mode of ['simple', 'extended', 'prepared']) {
    const run = await runTool(
      pgbenchBin,
      ['-n', '-S', '-c', '4', '-j', '2', '-t', '200', '-M', mode, target],
      env,
    );
    t.equal(run.code, 0, `-M ${mode}: exit code 0`);
    t.match(run.stdout, `query mode: ${mode}\n`);
    t.match(run.stdout, '\nnumber of transactions actually processed: 800/800\n', `-M ${mode}`);
    t.match(run.stdout, '\nnumber of failed transactions: 0 (0.000%)\n');
  }
  // The TPC-B-like default script: updates and inserts through the proxy, 4 clients at once.
  const tpcb = await runTool(pgbenchBin, ['-n', '-c', '4', '-j', '2', '-t', '50', target], env);
  t.equal(tpcb.code, 0, `tpcb-like: ${tpcb.stderr}`);
  t.match(tpcb.stdout, '\nnumber of transactions actually processed: 200/200\n');
  const history = await f.db.query<{ n: number }>('select count(*)::int as n from pgbench_history');
  t.equal(history.rows[0]!.n, 200, 'every transaction inserted its history row');
});

t.test('a pgbench script checks the tenant view in every transaction', async (t) => {
  const f = await proxyFixture(t);
  const script = join(scratchDir(t), 'tenant.sql');
  // A transaction that sees any row but acme's two divides by zero, and pgbench fails.
  writeFileSync(
    script,
    [
      "select count(*) as n, count(*) filter (where tenant_id <> 'acme') as foreign_rows, coalesce(pgvpd.current_tenant_id(), '') = 'acme' as is_acme from public.notes \\gset",
      '\\if :foreign_rows != 0 or :n != 2 or not :is_acme',
      'select 1 / 0;',
      '\\endif',
      '',
    ].join('\n'),
  );
  const env = { PGPASSWORD: f.app.password };
  for (const mode of ['simple', 'prepared']) {
    const run = await runTool(
      pgbenchBin,
      [
        '-n',
        '-f',
        script,
        '-c',
        '4',
        '-j',
        '2',
        '-t',
        '100',
        '-M',
        mode,
        conninfo(f, f.userFor('acme')),
      ],
      env,
    );
    t.equal(run.code, 0, `-M ${mode}: ${run.stderr}`);
    t.match(run.stdout, '\nnumber of transactions actually processed: 400/400\n');
  }
  // The same script as globex fails at once: the check does detect another view.
  const globex = await runTool(
    pgbenchBin,
    ['-n', '-f', script, '-c', '1', '-t', '5', conninfo(f, f.userFor('globex'))],
    env,
  );
  t.equal(globex.code, 2);
  t.match(globex.stderr, 'division by zero');
});
