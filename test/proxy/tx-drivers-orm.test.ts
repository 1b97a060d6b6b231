// ORMs through a pooled proxy in transaction mode, with fewer pooled backends than clients:
// Drizzle on postgres.js (prepare on and off) and on node-postgres with `.prepare('name')`
// statements over two backends, and Kysely on a node-postgres pool, each with a transaction that
// sees its own insert and rolls back. Clients of both orgs run at once; every result must be
// exactly the own org's rows and context, and a backend must have served both orgs (see
// tx-support.ts for the session-mode run of the same plumbing).
// The proxy is in org mode, or in app mode with PGVPD_TX_DRIVERS_PROXY=app (tx-support.ts;
// app-tx-drivers-orm.test.ts runs this file so).
import { TransactionRollbackError, and, like, sql as dsql } from 'drizzle-orm';
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres';
import { pgTable, serial, text, uuid } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePostgresJs } from 'drizzle-orm/postgres-js';
import { Kysely, PostgresDialect, sql as ksql, type Generated } from 'kysely';
import pg from 'pg';
import postgres from 'postgres';
import t from 'tap';
import type { TestLike } from '../support/postgres.js';
import { openClient } from './org-support.js';
import { BackendLog, assertSharing, txFixture, type Org, type TxFixture } from './tx-support.js';

const one = await txFixture(t, 1);
const two = await txFixture(t, 2);

const docs = pgTable('docs', {
  id: serial('id').primaryKey(),
  // uuid in org mode; app mode's org_id is text, which Drizzle's uuid column writes alike.
  orgId: uuid('org_id').notNull(),
  body: text('body'),
});

interface Row {
  body: string | null;
  pid: number;
  tenant: string | null;
}

/** One result's rows as what they show: the tenants, the bodies, the backends (one expected). */
function summary(rows: Row[]) {
  return {
    tenants: [...new Set(rows.map((r) => r.tenant))],
    rows: rows.map((r) => r.body),
    pids: [...new Set(rows.map((r) => r.pid))],
  };
}

/** Checks `results` of each org against its view; logs the backends; returns the mismatches. */
function check(x: TxFixture, log: BackendLog, results: [Org, Row[]][], extra: string[] = []) {
  const wrong: string[] = [];
  for (const [n, [org, rows]] of results.entries()) {
    const s = summary(rows);
    const expected = x.expected(org);
    const wanted = [...expected.rows, ...extra].sort();
    for (const pid of s.pids) log.add(org, pid);
    if (
      s.pids.length !== 1 ||
      JSON.stringify({ tenants: s.tenants, rows: s.rows }) !==
        JSON.stringify({ tenants: [expected.tenant], rows: wanted })
    ) {
      wrong.push(`result ${String(n)} of ${org}: ${JSON.stringify(s)}`);
    }
  }
  return wrong;
}

function postgresJs(t: TestLike, x: TxFixture, org: Org, prepare: boolean) {
  const sql = postgres({
    host: '127.0.0.1',
    port: x.f.proxy.port,
    database: x.login(org).database,
    username: x.login(org).user,
    password: x.login(org).password,
    max: 2,
    prepare,
    onnotice: () => undefined,
  });
  t.teardown(() => sql.end({ timeout: 1 }));
  return sql;
}

const drizzleColumns = {
  body: docs.body,
  pid: dsql<number>`pg_backend_pid()`.mapWith(Number),
  tenant: dsql<string>`pgvpd.current_tenant_id()`,
};

for (const prepare of [true, false]) {
  t.test(
    `Drizzle on postgres.js, prepare ${String(prepare)}: both orgs over one backend`,
    async (t) => {
      const dbs = {
        acme: drizzlePostgresJs(postgresJs(t, one, 'acme', prepare)),
        beta: drizzlePostgresJs(postgresJs(t, one, 'beta', prepare)),
      };
      const asked: Org[] = Array.from({ length: 16 }, (_, i) => (i % 2 === 0 ? 'acme' : 'beta'));
      const results = await Promise.all(
        asked.map(
          async (org) =>
            [org, await dbs[org].select(drizzleColumns).from(docs).orderBy(docs.body)] as [
              Org,
              Row[],
            ],
        ),
      );
      const log = new BackendLog();
      t.same(check(one, log, results), [], 'every select saw exactly its org');

      // A transaction sees its own insert; the other org, queued meanwhile, never does.
      const beta = Promise.all(
        [0, 1, 2].map(
          async () =>
            ['beta', await dbs.beta.select(drizzleColumns).from(docs).orderBy(docs.body)] as [
              Org,
              Row[],
            ],
        ),
      );
      let inside: Row[] = [];
      const outcome = await dbs.acme
        .transaction(async (tx) => {
          await tx.insert(docs).values({ orgId: one.f.orgs.acme, body: 'dz-tx' });
          inside = await tx.select(drizzleColumns).from(docs).orderBy(docs.body);
          tx.rollback();
        })
        .then(
          () => 'committed',
          (error: unknown) => (error instanceof TransactionRollbackError ? 'rolled back' : error),
        );
      t.equal(outcome, 'rolled back');
      t.same(check(one, log, [['acme', inside]], ['dz-tx']), [], 'inside: acme’s rows and dz-tx');
      t.same(check(one, log, await beta), [], 'beta never saw dz-tx');
      const after = await dbs.acme.select(drizzleColumns).from(docs).orderBy(docs.body);
      t.same(check(one, log, [['acme', after]]), [], 'rolled back');
      assertSharing(t, log, one.poolSize, `Drizzle on postgres.js prepare ${String(prepare)}`);
    },
  );
}

t.test('Drizzle on pg: .prepare(name) statements of both orgs over two backends', async (t) => {
  const orgs: Org[] = ['acme', 'beta', 'acme', 'beta'];
  const clients = await Promise.all(orgs.map((org) => openClient(t, two.login(org))));
  const holder = await openClient(t, two.login('acme'));
  await holder.query('begin');
  await holder.query('select 1');
  const log = new BackendLog();
  // Client n may start its first execution once client n - 1 has finished its own.
  const finished = orgs.map(() => {
    let resolve = (): void => undefined;
    const promise = new Promise<void>((r) => (resolve = r));
    return { promise, resolve };
  });
  const turn = (n: number): Promise<void> =>
    n === 0 ? Promise.resolve() : finished[n - 1]!.promise;
  const done = (n: number): void => {
    finished[n]!.resolve();
    if (n === orgs.length - 1) void holder.query('commit');
  };
  const results = await Promise.all(
    clients.map(async (client, n) => {
      const db = drizzlePg(client);
      // The same statement name in every client; beta's text differs (a condition more).
      const org = orgs[n]!;
      const matches = like(docs.body, dsql.placeholder('pattern'));
      const statement = db
        .select(drizzleColumns)
        .from(docs)
        .where(org === 'acme' ? matches : and(matches, dsql`1 = 1`))
        .orderBy(docs.body)
        .prepare('docs_like');
      const out: [Org, Row[]][] = [];
      // First one execution per client, in turn, while `holder` keeps the other backend in a
      // transaction: the one left passes from org to org (waited for up to 50 ms first).
      await turn(n);
      out.push([org, await statement.execute({ pattern: '%' })]);
      done(n);
      for (let i = 0; i < 12; i++) {
        out.push([org, await statement.execute({ pattern: i % 2 === 0 ? '%' : '_%' })]);
      }
      return out;
    }),
  );
  t.same(check(two, log, results.flat()), [], 'every execution saw exactly its org');
  assertSharing(t, log, two.poolSize, 'Drizzle on pg, prepared');
});

interface KyselyDatabase {
  docs: { id: Generated<number>; org_id: string; body: string | null };
}

function kyselyFor(t: TestLike, x: TxFixture, org: Org): Kysely<KyselyDatabase> {
  const pool = new pg.Pool({ host: '127.0.0.1', ...x.login(org), max: 2 });
  pool.on('error', () => undefined);
  const db = new Kysely<KyselyDatabase>({ dialect: new PostgresDialect({ pool }) });
  t.teardown(() => db.destroy());
  return db;
}

t.test('Kysely on pg: both orgs over one backend, a transaction rolled back', async (t) => {
  const dbs = { acme: kyselyFor(t, one, 'acme'), beta: kyselyFor(t, one, 'beta') };
  const select = (db: Kysely<KyselyDatabase>) =>
    db
      .selectFrom('docs')
      .select([
        'body',
        ksql<number>`pg_backend_pid()`.as('pid'),
        ksql<string>`pgvpd.current_tenant_id()`.as('tenant'),
      ])
      .orderBy('body')
      .execute();
  const log = new BackendLog();
  const asked: Org[] = Array.from({ length: 16 }, (_, i) => (i % 2 === 0 ? 'acme' : 'beta'));
  const results = await Promise.all(
    asked.map(async (org) => [org, await select(dbs[org])] as [Org, Row[]]),
  );
  t.same(check(one, log, results), [], 'every select saw exactly its org');

  const beta = Promise.all(
    [0, 1, 2].map(async () => ['beta', await select(dbs.beta)] as [Org, Row[]]),
  );
  let inside: Row[] = [];
  const rolledBack = await dbs.acme
    .transaction()
    .execute(async (trx) => {
      await trx.insertInto('docs').values({ org_id: one.f.orgs.acme, body: 'ky-tx' }).execute();
      inside = await select(trx);
      throw new Error('roll back');
    })
    .catch((error: unknown) => (error as Error).message);
  t.equal(rolledBack, 'roll back');
  t.same(check(one, log, [['acme', inside]], ['ky-tx']), [], 'inside: acme’s rows and ky-tx');
  t.same(check(one, log, await beta), [], 'beta never saw ky-tx');
  t.same(check(one, log, [['acme', await select(dbs.acme)]]), [], 'rolled back');
  assertSharing(t, log, one.poolSize, 'Kysely on pg');
});
