// Node.js drivers through a pooled proxy in transaction mode, with fewer pooled backends than
// clients: node-postgres (simple and extended protocol, `name:` statements bound on a backend
// that has not seen them, a transaction that keeps its backend), pg-cursor (batches of one
// inside a transaction and, without Sync, outside one) and postgres.js (prepare on and off, five
// pipelined queries on one connection while the other org queues). Clients of both orgs run at
// once; every answer must be exactly its own org's rows and context, and a backend must have
// served both orgs (see tx-support.ts for the session-mode run of the same plumbing).
// The proxy is in org mode, or in app mode with PGVPD_TX_DRIVERS_PROXY=app (tx-support.ts;
// app-tx-drivers-node.test.ts runs this file so).
import { createRequire } from 'node:module';
import pg from 'pg';
import postgres from 'postgres';
import t from 'tap';
import { sqlstate } from '../support/pgvpd.js';
import type { TestLike } from '../support/postgres.js';
import { openClient } from './org-support.js';
import {
  BackendLog,
  assertSharing,
  orgNames,
  pgView,
  transactionMode,
  txFixture,
  type Org,
  type TxFixture,
  type View,
} from './tx-support.js';

/** pg-cursor ships no types (and @types/pg-cursor is not a dependency): what is used of it. */
interface CursorInstance extends pg.Submittable {
  read(rows: number): Promise<Record<string, unknown>[]>;
  close(): Promise<void>;
}
const Cursor = createRequire(import.meta.url)('pg-cursor') as new (
  text: string,
  values?: unknown[],
) => CursorInstance;

const one = await txFixture(t, 1);
const two = await txFixture(t, 2);

function connect(t: TestLike, x: TxFixture, org: Org): Promise<pg.Client> {
  return openClient(t, x.login(org));
}

/** Two clients of each org, acme first: [acme, acme, beta, beta]. */
async function clientsOfBoth(t: TestLike, x: TxFixture): Promise<[Org, pg.Client][]> {
  const orgs: Org[] = ['acme', 'acme', 'beta', 'beta'];
  return Promise.all(orgs.map(async (org) => [org, await connect(t, x, org)] as [Org, pg.Client]));
}

/** The view minus the pid, for comparison with x.expected(org). */
const seenOf = (view: View) => ({ tenant: view.tenant, rows: view.rows });

// The same question in the extended protocol: docs of both orgs asked for by parameter, where
// row-level security must still leave only the client's own.
const viewByParam = `select pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant,
  array(select body from public.docs where org_id = any($1) order by body) as rows`;

t.test('pg: four clients of two orgs over one backend each see only their org', async (t) => {
  const clients = await clientsOfBoth(t, one);
  const log = new BackendLog();
  const both = [one.f.orgs.acme, one.f.orgs.beta];
  const wrong: string[] = [];
  await Promise.all(
    clients.map(async ([org, client], n) => {
      for (let i = 0; i < 15; i++) {
        const simple = await pgView(client);
        const extended = (await client.query<View>(viewByParam, [both])).rows[0]!;
        for (const view of [simple, extended]) {
          log.add(org, view.pid);
          if (JSON.stringify(seenOf(view)) !== JSON.stringify(one.expected(org))) {
            wrong.push(`client ${String(n)} (${org}) round ${String(i)}: ${JSON.stringify(view)}`);
          }
        }
      }
    }),
  );
  t.same(wrong, [], 'every answer was exactly the own org’s view, in both protocols');
  assertSharing(t, log, one.poolSize, 'pg, one backend');
});

t.test('pg: named statements are bound on a backend that has not seen them', async (t) => {
  const x = await connect(t, two, 'acme');
  const [h1, h2] = await Promise.all([connect(t, two, 'beta'), connect(t, two, 'beta')]);
  // The same statement name in two clients with different texts: each must run its own.
  const acmeStatement: pg.QueryConfig = {
    name: 'docs_view',
    text: `select pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant,
             array(select body from public.docs where body like $1 order by body) as rows`,
    values: ['%'],
  };
  const betaStatement: pg.QueryConfig = {
    name: 'docs_view',
    text: `select pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant,
             array(select body from public.docs where body like $1 order by body desc) as rows`,
    values: ['b%'],
  };
  const run = async (client: pg.Client, statement: pg.QueryConfig) =>
    (await client.query<View>(statement)).rows[0]!;
  const acme = two.expected('acme');
  const betaDesc = { tenant: two.f.orgs.beta, rows: ['b3', 'b2', 'b1'] };

  // With two backends: h1 holds one in a transaction, so x's statement is parsed on the other;
  // h2 then takes that one, h1 commits, and x's next execution lands on h1's backend, which has
  // never seen x's statement.
  await h1.query('begin');
  const held1 = await pgView(h1);
  const first = await run(x, acmeStatement);
  await h2.query('begin');
  const held2 = await pgView(h2);
  t.same(seenOf(await run(h2, betaStatement)), betaDesc, 'beta’s docs_view is its own');
  await h1.query('commit');
  const second = await run(x, acmeStatement);
  await h2.query('commit');
  const third = await run(x, acmeStatement);
  for (const [n, view] of [first, second, third].entries()) {
    t.same(seenOf(view), acme, `acme’s execution ${String(n + 1)} sees acme`);
  }
  if (transactionMode) {
    t.not(first.pid, held1.pid, 'first execution beside h1’s transaction');
    t.equal(held2.pid, first.pid, 'h2 took the backend x had parsed on');
    t.equal(second.pid, held1.pid, 'the second execution ran on the backend h1 left');
  } else {
    t.equal(second.pid, first.pid, 'session mode: x keeps its backend');
    t.equal(third.pid, first.pid);
  }
  t.same(seenOf(await run(h1, betaStatement)), betaDesc, 'h1’s docs_view after the juggling');
  // The juggling above shared backends between the orgs (h2 took the one x had parsed on); the
  // concurrent round below may not: owners keep to their backends while each holds its share.
  const log = new BackendLog();
  for (const view of [held1, held2]) log.add('beta', view.pid);
  for (const view of [first, second, third]) log.add('acme', view.pid);

  // Then all of them at once, over the same two backends.
  const wrong: string[] = [];
  await Promise.all(
    (
      [
        ['acme', x, acmeStatement, acme],
        ['beta', h1, betaStatement, betaDesc],
        ['beta', h2, betaStatement, betaDesc],
      ] as const
    ).map(async ([org, client, statement, expected]) => {
      for (let i = 0; i < 20; i++) {
        const view = await run(client, statement);
        log.add(org, view.pid);
        if (JSON.stringify(seenOf(view)) !== JSON.stringify(expected)) {
          wrong.push(`${org} round ${String(i)}: ${JSON.stringify(view)}`);
        }
      }
    }),
  );
  t.same(wrong, [], 'concurrent executions of docs_view all answered their own');
  assertSharing(t, log, two.poolSize, 'pg named statements, two backends');
});

t.test('pg: a transaction keeps its backend until it ends; the other org waits', async (t) => {
  const acme = await connect(t, one, 'acme');
  const beta = await connect(t, one, 'beta');
  const insert = 'insert into public.docs (org_id, body) values ($1, $2)';
  await acme.query('begin');
  await acme.query(insert, [one.f.orgs.acme, 'tx-acme']);
  const inside = await pgView(acme);
  t.same(seenOf(inside), { tenant: one.f.orgs.acme, rows: ['a1', 'a2', 'tx-acme'] });
  let acmeEnded = false;
  const betaWhileOpen = pgView(beta).then((view) => ({ view, afterAcme: acmeEnded }));
  t.equal(await sqlstate(acme.query(insert, [one.f.orgs.beta, 'sneaky'])), '42501');
  t.equal(await sqlstate(acme.query('select 1')), '25P02', 'the transaction is aborted');
  acmeEnded = true;
  await acme.query('rollback');
  const { view, afterAcme } = await betaWhileOpen;
  t.same(seenOf(view), one.expected('beta'), 'beta saw only beta, never tx-acme');
  if (transactionMode) {
    t.ok(afterAcme, 'beta was answered only after acme’s transaction ended');
    t.equal(view.pid, inside.pid, 'on the backend acme’s transaction had');
  } else {
    t.notOk(afterAcme, 'session mode: beta has a backend of its own');
  }
  const after = await pgView(acme);
  t.same(seenOf(after), one.expected('acme'), 'the rollback removed tx-acme');
  const all = await one.f.db.query<{ bodies: string[] }>(
    'select array_agg(body order by body) as bodies from public.docs',
  );
  t.same(all.rows[0]!.bodies, ['a1', 'a2', 'b1', 'b2', 'b3'], 'nothing was written');
});

const cursorSql = `select body, pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant
  from public.docs order by body`;

/** Reads a pg-cursor to its end in batches of one; the rows' bodies, pids and tenants. */
async function readByOne(client: pg.Client) {
  const cursor = client.query(new Cursor(cursorSql));
  const batches: Record<string, unknown>[][] = [];
  for (;;) {
    const batch = await cursor.read(1);
    if (batch.length === 0) break;
    batches.push(batch);
  }
  await cursor.close();
  const rows = batches.flat();
  return {
    sizes: batches.map((b) => b.length),
    bodies: rows.map((r) => r.body),
    tenants: [...new Set(rows.map((r) => r.tenant))],
    pids: [...new Set(rows.map((r) => r.pid as number))],
  };
}

for (const inTransaction of [true, false]) {
  const where = inTransaction ? 'inside a transaction' : 'outside a transaction (no Sync)';
  t.test(`pg-cursor: batches of one ${where}, clients of both orgs at once`, async (t) => {
    const clients = await clientsOfBoth(t, one);
    const log = new BackendLog();
    const results = await Promise.all(
      clients.map(async ([org, client]) => {
        const read: Awaited<ReturnType<typeof readByOne>>[] = [];
        for (let i = 0; i < 3; i++) {
          if (inTransaction) await client.query('begin');
          read.push(await readByOne(client));
          if (inTransaction) await client.query('commit');
        }
        return { org, read };
      }),
    );
    for (const { org, read } of results) {
      for (const r of read) {
        const expected = one.expected(org);
        t.same(
          r,
          {
            sizes: expected.rows.map(() => 1),
            bodies: expected.rows,
            tenants: [expected.tenant],
            pids: [r.pids[0]],
          },
          `${org}: its rows one at a time, all from one backend`,
        );
        for (const pid of r.pids) log.add(org, pid);
      }
    }
    assertSharing(t, log, one.poolSize, `pg-cursor ${where}`);
  });
}

function sqlFor(
  t: TestLike,
  x: TxFixture,
  org: Org,
  options: postgres.Options<Record<string, postgres.PostgresType>>,
): postgres.Sql {
  const sql = postgres({
    host: '127.0.0.1',
    port: x.f.proxy.port,
    database: x.login(org).database,
    username: x.login(org).user,
    password: x.login(org).password,
    onnotice: () => undefined,
    ...options,
  });
  t.teardown(() => sql.end({ timeout: 1 }));
  return sql;
}

interface Numbered extends View {
  i: number;
}

/** viewSql with a number the answer must carry back (each query's own parameter). */
function numbered(sql: postgres.Sql, i: number) {
  return sql<[Numbered]>`
    select ${i}::int as i, pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant,
           array(select body from public.docs order by body) as rows`;
}

for (const prepare of [true, false]) {
  t.test(`postgres.js, prepare ${String(prepare)}: both orgs over one backend`, async (t) => {
    const log = new BackendLog();
    const pools = {
      acme: sqlFor(t, one, 'acme', { prepare, max: 2 }),
      beta: sqlFor(t, one, 'beta', { prepare, max: 2 }),
    };
    const asked = Array.from({ length: 24 }, (_, i) => ({ i, org: orgNames[i % 2]! }));
    const answers = await Promise.all(asked.map(({ i, org }) => numbered(pools[org], i)));
    const wrong: string[] = [];
    for (const [n, [answer]] of answers.entries()) {
      const { i, org } = asked[n]!;
      log.add(org, answer.pid);
      const expected = { i, ...one.expected(org) };
      if (JSON.stringify({ i: answer.i, ...seenOf(answer) }) !== JSON.stringify(expected)) {
        wrong.push(`query ${String(i)} of ${org}: ${JSON.stringify(answer)}`);
      }
    }
    t.same(wrong, [], 'each of 24 answers carried its own number and its own org’s rows');
    assertSharing(t, log, one.poolSize, `postgres.js prepare ${String(prepare)}`);
  });

  t.test(
    `postgres.js, prepare ${String(prepare)}, max 1: five pipelined queries while the other org queues`,
    async (t) => {
      const acme = sqlFor(t, one, 'acme', { prepare, max: 1 });
      const beta = sqlFor(t, one, 'beta', { prepare, max: 1 });
      // Warm both connections so that the five go out pipelined on an open connection.
      await Promise.all([acme`select 1`, beta`select 1`]);
      const log = new BackendLog();
      const [acmeAnswers, betaAnswers] = await Promise.all([
        Promise.all([0, 1, 2, 3, 4].map((i) => numbered(acme, i))),
        Promise.all([10, 11, 12, 13, 14].map((i) => numbered(beta, i))),
      ]);
      for (const [org, answers, base] of [
        ['acme', acmeAnswers, 0],
        ['beta', betaAnswers, 10],
      ] as const) {
        t.same(
          answers.map(([a]) => ({ i: a.i, ...seenOf(a) })),
          [0, 1, 2, 3, 4].map((k) => ({ i: base + k, ...one.expected(org) })),
          `${org}: five answers, each to its own query`,
        );
        for (const [a] of answers) log.add(org, a.pid);
      }
      assertSharing(t, log, one.poolSize, `postgres.js pipeline prepare ${String(prepare)}`);
    },
  );
}

t.test('postgres.js: sql.begin keeps one backend and rolls back on a throw', async (t) => {
  const acme = sqlFor(t, one, 'acme', { prepare: true, max: 1 });
  const beta = sqlFor(t, one, 'beta', { prepare: true, max: 1 });
  const log = new BackendLog();
  const betaViews: Promise<Numbered[]> = Promise.all(
    [20, 21, 22].map(async (i) => (await numbered(beta, i))[0]),
  );
  const inside: Numbered[] = [];
  const refused = await sqlstate(
    acme.begin(async (sql) => {
      await sql`insert into public.docs (org_id, body) values (${one.f.orgs.acme}, 'pjs-tx')`;
      inside.push((await numbered(sql as unknown as postgres.Sql, 1))[0]);
      inside.push((await numbered(sql as unknown as postgres.Sql, 2))[0]);
      await sql`insert into public.docs (org_id, body) values (${one.f.orgs.beta}, 'sneaky')`;
    }),
  );
  t.equal(refused, '42501', 'beta’s org_id is refused inside acme’s transaction');
  t.same(
    inside.map((v) => ({ i: v.i, ...seenOf(v) })),
    [1, 2].map((i) => ({ i, tenant: one.f.orgs.acme, rows: ['a1', 'a2', 'pjs-tx'] })),
  );
  t.equal(inside[0]!.pid, inside[1]!.pid, 'both statements of the transaction on one backend');
  for (const v of inside) log.add('acme', v.pid);
  for (const v of await betaViews) {
    t.same({ i: v.i, ...seenOf(v) }, { i: v.i, ...one.expected('beta') }, 'beta never saw pjs-tx');
    log.add('beta', v.pid);
  }
  const [after] = await numbered(acme, 3);
  t.same(seenOf(after), one.expected('acme'), 'rolled back');
  assertSharing(t, log, one.poolSize, 'postgres.js sql.begin');
});
