// Dedicated placement on a second PostgreSQL cluster. The first cluster (the run's) holds the
// catalog and the shared orgs; this file starts a second cluster with the harness's server code,
// installs pgvpd in a database acme_dedicated there, and registers it in the catalog as server
// `second` with org C dedicated to it. The proxy then logs in there as the same connect_as role
// (the passfile matches any host) and issues C's context there with control_url's credentials, so
// that cluster has a pgvpd_proxy member of the same name and password.
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import t from 'tap';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import { backendPid, connect as connectUrl, setupSqlPath, sqlstate } from '../support/pgvpd.js';
import { secondCluster } from '../support/second-cluster.js';
import { backendKey, sendCancelRequest, waitFor } from './clients-support.js';
import { orgFixture } from './org-fixture.js';
import { failure, openClient, seen } from './org-support.js';

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

const second = await secondCluster(t);
const f = await orgFixture(t);

// On the second cluster: the dedicated database with pgvpd, the same two roles, C's rows.
const admin = await connectUrl(second.adminUrl);
await admin.query('create database acme_dedicated');
await admin.end();
const dedicated = await connectUrl(withDatabase(second.adminUrl, 'acme_dedicated'));
t.teardown(() => dedicated.end());
await dedicated.query(readFileSync(setupSqlPath, 'utf8'));
await dedicated.query(
  `create role ${f.connectAs} login password '${f.connectAsPassword}' nosuperuser nobypassrls noinherit`,
);
await dedicated.query(
  `create role ${f.proxyRole.name} login password '${f.proxyRole.password}' nosuperuser nobypassrls inherit in role pgvpd_proxy`,
);
await dedicated.query('select pgvpd.add_app_role($1)', [f.connectAs]);

// In the catalog (first cluster): server `second`, org C dedicated to acme_dedicated there.
await f.db.query(`select pgvpd.server_add('second', '127.0.0.1', $1, 'disable')`, [second.port]);
const orgC = (
  await f.db.query<{ id: string }>(
    `select pgvpd.org_create('C', 'c-analytics', 'dedicated', 'second', 'acme_dedicated') as id`,
  )
).rows[0]!.id;
await f.db.query('select pgvpd.user_add($1, $2, $3, $4)', [
  orgC,
  'alice',
  makeVerifier('alice-at-c'),
  f.connectAs,
]);
await f.db.query('select pgvpd.user_add($1, $2, $3, $4)', [
  orgC,
  'carol',
  makeVerifier('carol-at-c'),
  f.connectAs,
]);

// C's rows, and rows of other org ids that must stay invisible even in a dedicated database.
await dedicated.query(`
  create table public.docs (id serial primary key, org_id uuid not null, body text);
  insert into public.docs (org_id, body) values
    ('${orgC}', 'c1'), ('${orgC}', 'c2'), ('${orgC}', 'c3'), ('${orgC}', 'c4'),
    ('${f.orgs.acme}', 'stray-acme'), (gen_random_uuid(), 'stray-other');
  select pgvpd.protect('public.docs', 'org_id');
  grant select, insert on public.docs to ${f.connectAs};
  grant usage on sequence public.docs_id_seq to ${f.connectAs};
`);

const logins = {
  c: { database: 'c-analytics', user: 'alice', password: 'alice-at-c' },
  carol: { database: 'c-analytics', user: 'carol', password: 'carol-at-c' },
  acme: { database: 'acme-analytics', user: 'alice', password: 'alice-at-acme' },
} as const;

// The proxy learns of C by NOTIFY pgvpd_catalog; wait until it routes c-analytics.
t.ok(
  await waitFor(async () => {
    const code = await sqlstate(openClient(t, { port: f.proxy.port, ...logins.c }));
    return code !== '3D000';
  }, 5000),
  'the proxy knows org C',
);

interface Where {
  port: number;
  database: string;
  user: string;
}

async function where(client: pg.Client): Promise<Where> {
  const { rows } = await client.query<Where>(
    'select inet_server_port() as port, current_database() as database, current_user as user',
  );
  return rows[0]!;
}

t.test(
  'a client of dbname=c-analytics lands on the second cluster, in acme_dedicated',
  async (t) => {
    const c = await openClient(t, { port: f.proxy.port, ...logins.c });
    t.same(await where(c), { port: second.port, database: 'acme_dedicated', user: f.connectAs });
    t.equal(
      (await c.query<{ port: string }>("select current_setting('port') as port")).rows[0]!.port,
      String(second.port),
    );
    t.same(await seen(c), { tenant: orgC, rows: ['c1', 'c2', 'c3', 'c4'] }, 'only C’s rows');
    t.equal(
      (await c.query<{ user: string }>("select pgvpd.context('user') as user")).rows[0]!.user,
      'alice',
    );
    // The session is a backend of the second cluster, carrying a context issued there.
    const pid = await backendPid(c);
    const there = await dedicated.query<{ usename: string }>(
      'select usename from pg_stat_activity where pid = $1',
      [pid],
    );
    t.same(there.rows, [{ usename: f.connectAs }]);
    const record = await dedicated.query<{ tenant: string }>(
      'select tenant from pgvpd_private.session_context where pid = $1',
      [pid],
    );
    t.same(record.rows, [{ tenant: orgC }], 'issue_context ran on the second cluster');
    // Writes go to the dedicated database, under the same policy.
    await c.query('insert into public.docs (org_id, body) values ($1, $2)', [orgC, 'c5']);
    t.equal(
      await sqlstate(
        c.query('insert into public.docs (org_id, body) values ($1, $2)', [f.orgs.acme, 'x']),
      ),
      '42501',
    );
    const stored = await dedicated.query("select 1 from public.docs where body = 'c5'");
    t.equal(stored.rowCount, 1, 'the row is in acme_dedicated on the second cluster');
    await dedicated.query("delete from public.docs where body = 'c5'");
  },
);

t.test('another user of C gets C too; shared orgs stay on the first cluster', async (t) => {
  const carol = await openClient(t, { port: f.proxy.port, ...logins.carol });
  t.same(await where(carol), {
    port: second.port,
    database: 'acme_dedicated',
    user: f.connectAs,
  });
  t.same(await seen(carol), { tenant: orgC, rows: ['c1', 'c2', 'c3', 'c4'] });
  const acme = await openClient(t, { port: f.proxy.port, ...logins.acme });
  t.same(await where(acme), { port: f.db.server.port, database: f.db.name, user: f.connectAs });
  t.same(await seen(acme), { tenant: f.orgs.acme, rows: ['a1', 'a2'] });
  // C's password is C's only: acme's alice password does not open c-analytics.
  t.equal(
    (await failure(openClient(t, { port: f.proxy.port, ...logins.c, password: 'alice-at-acme' })))
      .code,
    '28P01',
  );
});

t.test('cancel reaches the backend on the second cluster', async (t) => {
  const c = await openClient(t, { port: f.proxy.port, ...logins.c });
  const pid = await backendPid(c);
  const key = backendKey(c);
  t.not(key.processId, pid);
  const outcome = sqlstate(c.query('select pg_sleep(30)'));
  t.ok(
    await waitFor(async () => {
      const { rowCount } = await dedicated.query(
        "select 1 from pg_stat_activity where pid = $1 and wait_event = 'PgSleep'",
        [pid],
      );
      return rowCount === 1;
    }),
    'sleeping on the second cluster',
  );
  const cancelAt = Date.now();
  await sendCancelRequest(f.proxy.port, key.processId, key.secretKey);
  t.equal(await outcome, '57014');
  t.ok(Date.now() - cancelAt < 1000, 'within a second');
  t.same(await seen(c), { tenant: orgC, rows: ['c1', 'c2', 'c3', 'c4'] }, 'the session goes on');
});
