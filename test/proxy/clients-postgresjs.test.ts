// postgres.js through the app-mode proxy against a real PostgreSQL: isolation, parameters with
// named and unnamed statements, transactions with sql.begin, and a clean sql.end().
import postgres from 'postgres';
import t from 'tap';
import type { TestLike } from '../support/postgres.js';
import { sqlstate } from '../support/pgvpd.js';
import { waitFor } from './clients-support.js';
import { proxyFixture, type ProxyFixture } from './fixture.js';

interface Counts {
  acme: number;
  globex: number;
  total: number;
}

function sqlFor(
  t: TestLike,
  f: ProxyFixture,
  tenant: string,
  options: postgres.Options<Record<string, postgres.PostgresType>> = {},
): postgres.Sql {
  const sql = postgres({
    host: '127.0.0.1',
    port: f.proxy.port,
    database: f.db.name,
    username: f.userFor(tenant),
    password: f.app.password,
    max: 2,
    onnotice: () => undefined,
    ...options,
  });
  t.teardown(() => sql.end({ timeout: 1 }));
  return sql;
}

async function counts(sql: postgres.Sql): Promise<Counts> {
  const [row] = await sql<[Counts]>`
    select count(*) filter (where tenant_id = 'acme')::int as acme,
           count(*) filter (where tenant_id = 'globex')::int as globex,
           count(*)::int as total
      from public.notes`;
  return { ...row };
}

t.test('each tenant sees only its rows through postgres.js', async (t) => {
  const f = await proxyFixture(t);
  const acme = sqlFor(t, f, 'acme');
  const globex = sqlFor(t, f, 'globex');
  t.same(await counts(acme), { acme: 2, globex: 0, total: 2 });
  t.same(await counts(globex), { acme: 0, globex: 3, total: 3 });
  const [context] = await acme<[{ tenant: string }]>`select pgvpd.current_tenant_id() as tenant`;
  t.equal(context.tenant, 'acme');
  // Several connections of the same pool each get the context (max: 2, queries in parallel).
  const parallel = await Promise.all(
    Array.from(
      { length: 6 },
      () => acme<[{ tenant: string; n: number }]>`
      select pgvpd.current_tenant_id() as tenant, count(*)::int as n, pg_sleep(0.05)::text
        from public.notes`,
    ),
  );
  t.same(
    parallel.map(([row]) => ({ tenant: row.tenant, n: row.n })),
    Array.from({ length: 6 }, () => ({ tenant: 'acme', n: 2 })),
  );
});

t.test('parameterized queries bind values with named and unnamed statements', async (t) => {
  const f = await proxyFixture(t);
  for (const prepare of [true, false]) {
    const sql = sqlFor(t, f, 'globex', { prepare });
    const byTenant = (tenant: string) =>
      sql<
        { body: string }[]
      >`select body from public.notes where tenant_id = ${tenant} order by id`;
    t.same(
      (await byTenant('globex')).map((r) => r.body),
      ['g1', 'g2', 'g3'],
      `prepare: ${String(prepare)}`,
    );
    t.same(await byTenant('acme'), [], `acme rows stay invisible, prepare: ${String(prepare)}`);
    const [typed] = await sql<
      [{ n: number; s: string }]
    >`select ${41}::int + 1 as n, ${'ünï'} as s`;
    t.same({ ...typed }, { n: 42, s: 'ünï' });
    const unsafe = await sql.unsafe<{ body: string }[]>(
      'select body from public.notes where body = $1',
      ['g2'],
    );
    t.same(
      unsafe.map((r) => r.body),
      ['g2'],
    );
  }
});

t.test('sql.begin commits own rows and rolls back a row for another tenant', async (t) => {
  const f = await proxyFixture(t);
  const acme = sqlFor(t, f, 'acme');
  const committed = await acme.begin(async (tx) => {
    await tx`insert into public.notes (tenant_id, body) values ('acme', 'tx 1')`;
    const [row] = await tx<[{ n: number }]>`select count(*)::int as n from public.notes`;
    return row.n;
  });
  t.equal(committed, 3, 'the insert was visible inside the transaction');
  t.same(await counts(acme), { acme: 3, globex: 0, total: 3 }, 'and stays after commit');

  const failed = acme.begin(async (tx) => {
    await tx`insert into public.notes (tenant_id, body) values ('acme', 'tx 2')`;
    await tx`insert into public.notes (tenant_id, body) values ('globex', 'sneaky')`;
  });
  t.equal(await sqlstate(failed), '42501', 'WITH CHECK refuses the row of another tenant');
  t.same(await counts(acme), { acme: 3, globex: 0, total: 3 }, 'the whole transaction rolled back');

  // A savepoint rolls back only its part.
  await acme.begin(async (tx) => {
    await tx`insert into public.notes (tenant_id, body) values ('acme', 'tx 3')`;
    const inner = tx.savepoint(async (sp) => {
      await sp`insert into public.notes (tenant_id, body) values ('globex', 'sneaky')`;
    });
    t.equal(await sqlstate(inner), '42501');
  });
  const bodies = await f.db.query<{ bodies: string[] }>(
    'select array_agg(body order by id) as bodies from public.notes',
  );
  t.same(bodies.rows[0]!.bodies, ['a1', 'a2', 'g1', 'g2', 'g3', 'tx 1', 'tx 3']);
});

t.test('sql.end() closes every proxied session and its upstream backend', async (t) => {
  const f = await proxyFixture(t);
  const sql = sqlFor(t, f, 'acme', { max: 3 });
  // Three queries at once open three connections.
  await Promise.all([1, 2, 3].map(() => sql`select pg_sleep(0.1)`));
  const backends = async () =>
    (
      await f.db.query<{ n: number }>(
        'select count(*)::int as n from pg_stat_activity where usename = $1',
        [f.app.name],
      )
    ).rows[0]!.n;
  t.equal(f.proxy.sessionCount(), 3, 'three proxied sessions');
  t.equal(await backends(), 3, 'three upstream backends');
  await sql.end({ timeout: 5 });
  t.ok(await waitFor(() => f.proxy.sessionCount() === 0), 'the proxy closed all sessions');
  t.ok(await waitFor(async () => (await backends()) === 0), 'the upstream backends ended');
  t.equal(await sqlstate(sql`select 1`), 'CONNECTION_ENDED', 'the ended pool takes no query');
});
