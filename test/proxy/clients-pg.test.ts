// node-postgres (pg) through the app-mode proxy against a real PostgreSQL: both query protocols,
// transactions, COPY in both directions, a large value, LISTEN/NOTIFY, isolation and bypass.
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import t from 'tap';
import { sqlstate } from '../support/pgvpd.js';
import { adminUrl } from '../support/postgres.js';
import { sha256, superuser } from './clients-support.js';
import { proxyFixture, visible } from './fixture.js';

/** Everything a COPY ... TO STDOUT sends, as text. */
async function copyOut(client: pg.Client, sql: string): Promise<string> {
  const chunks: Buffer[] = [];
  await pipeline(
    client.query(copyTo(sql)),
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk);
        done();
      },
    }),
  );
  return Buffer.concat(chunks).toString('utf8');
}

/** Streams `lines` into a COPY ... FROM STDIN; resolves when the server has taken them. */
async function copyIn(client: pg.Client, sql: string, lines: string[]): Promise<void> {
  const chunks = function* () {
    for (let i = 0; i < lines.length; i += 500) yield lines.slice(i, i + 500).join('');
  };
  await pipeline(Readable.from(chunks()), client.query(copyFrom(sql)));
}

t.test('a simple-protocol query with two statements returns both results', async (t) => {
  const f = await proxyFixture(t);
  const acme = await f.connect(f.userFor('acme'));
  // Several statements in one query string are only possible in the simple protocol.
  const results = (await acme.query(
    "select 1 as one; select pgvpd.current_tenant_id() as tenant, count(*)::int as n from public.notes where body like 'a%'",
  )) as unknown as pg.QueryResult[];
  t.equal(results.length, 2);
  t.same(results[0]!.rows, [{ one: 1 }]);
  t.same(results[1]!.rows, [{ tenant: 'acme', n: 2 }]);
});

t.test('an extended-protocol query binds $1 and sees only the own tenant', async (t) => {
  const f = await proxyFixture(t);
  const acme = await f.connect(f.userFor('acme'));
  const byTenant = 'select body from public.notes where tenant_id = $1 order by id';
  t.same((await acme.query(byTenant, ['acme'])).rows, [{ body: 'a1' }, { body: 'a2' }]);
  t.same((await acme.query(byTenant, ['globex'])).rows, [], 'globex rows stay invisible');
  const typed = await acme.query<{ n: number; s: string }>(
    'select $1::int + 1 as n, $2::text as s',
    [41, 'ünïcödé'],
  );
  t.same(typed.rows, [{ n: 42, s: 'ünïcödé' }]);
});

t.test('a named prepared statement is parsed once and reused with new parameters', async (t) => {
  const f = await proxyFixture(t);
  const globex = await f.connect(f.userFor('globex'));
  const statement = (body: string): pg.QueryConfig => ({
    name: 'note_by_body',
    text: 'select tenant_id, body from public.notes where body = $1',
    values: [body],
  });
  t.same((await globex.query(statement('g1'))).rows, [{ tenant_id: 'globex', body: 'g1' }]);
  t.same((await globex.query(statement('g3'))).rows, [{ tenant_id: 'globex', body: 'g3' }]);
  t.same((await globex.query(statement('a1'))).rows, [], 'an acme row is not found');
  const prepared = await globex.query<{ name: string; text: string }>(
    'select name, statement as text from pg_prepared_statements',
  );
  t.same(prepared.rows, [
    { name: 'note_by_body', text: 'select tenant_id, body from public.notes where body = $1' },
  ]);
});

t.test('a transaction refuses a row for another tenant with 42501 and rolls back', async (t) => {
  const f = await proxyFixture(t);
  const acme = await f.connect(f.userFor('acme'));
  await acme.query('begin');
  await acme.query("insert into public.notes (tenant_id, body) values ('acme', 'in tx')");
  t.same(await visible(acme), { acme: 3, globex: 0, total: 3 }, 'the own insert is visible');
  t.equal(
    await sqlstate(
      acme.query("insert into public.notes (tenant_id, body) values ('globex', 'sneaky')"),
    ),
    '42501',
    'WITH CHECK refuses a row of another tenant',
  );
  t.equal(await sqlstate(acme.query('select 1')), '25P02', 'the transaction is aborted');
  await acme.query('rollback');
  t.same(await visible(acme), { acme: 2, globex: 0, total: 2 });
  const all = await f.db.query<{ bodies: string[] }>(
    'select array_agg(body order by id) as bodies from public.notes',
  );
  t.same(all.rows[0]!.bodies, ['a1', 'a2', 'g1', 'g2', 'g3'], 'no trace of either insert');

  // Moving an own row to another tenant is refused just the same, outside a transaction too.
  t.equal(
    await sqlstate(acme.query("update public.notes set tenant_id = 'globex' where body = 'a1'")),
    '42501',
  );
  await acme.query('begin');
  await acme.query("insert into public.notes (tenant_id, body) values ('acme', 'kept')");
  await acme.query('commit');
  t.same(await visible(acme), { acme: 3, globex: 0, total: 3 }, 'a committed insert stays');
});

t.test('COPY TO STDOUT returns only the own tenant rows', async (t) => {
  const f = await proxyFixture(t);
  const globex = await f.connect(f.userFor('globex'));
  t.equal(
    await copyOut(globex, 'copy public.notes (tenant_id, body) to stdout'),
    'globex\tg1\nglobex\tg2\nglobex\tg3\n',
  );
  t.equal(
    await copyOut(
      globex,
      'copy (select body from public.notes order by id) to stdout with (format csv, header)',
    ),
    'body\ng1\ng2\ng3\n',
  );
  t.same(await visible(globex), { acme: 0, globex: 3, total: 3 }, 'the session is usable after');
});

t.test('COPY FROM STDIN loads thousands of rows for the own tenant', async (t) => {
  const f = await proxyFixture(t);
  const acme = await f.connect(f.userFor('acme'));
  const rows = 5000;
  const lines = Array.from({ length: rows }, (_, i) => `acme\tcopied ${String(i)}\n`);
  // PostgreSQL itself refuses COPY FROM into a table under row-level security (0A000) …
  t.equal(
    await sqlstate(copyIn(acme, 'copy public.notes (tenant_id, body) from stdin', lines)),
    '0A000',
  );
  t.same(await visible(acme), { acme: 2, globex: 0, total: 2 });
  // … so rows are copied into a staging table and inserted from there, under the policy.
  await acme.query('create temp table staging (tenant_id text, body text)');
  await copyIn(acme, 'copy staging (tenant_id, body) from stdin', lines);
  t.equal((await acme.query('select count(*)::int as n from staging')).rows[0].n, rows);
  const inserted = await acme.query(
    'insert into public.notes (tenant_id, body) select tenant_id, body from staging',
  );
  t.equal(inserted.rowCount, rows);
  t.same(await visible(acme), { acme: rows + 2, globex: 0, total: rows + 2 });

  await copyIn(acme, 'copy staging (tenant_id, body) from stdin', ['globex\tsmuggled\n']);
  t.equal(
    await sqlstate(
      acme.query(
        "insert into public.notes (tenant_id, body) select tenant_id, body from staging where tenant_id = 'globex'",
      ),
    ),
    '42501',
    'a row of another tenant copied in is still refused on insert',
  );
  const perTenant = await f.db.query<{ tenant_id: string; n: number }>(
    'select tenant_id, count(*)::int as n from public.notes group by 1 order by 1',
  );
  t.same(perTenant.rows, [
    { tenant_id: 'acme', n: rows + 2 },
    { tenant_id: 'globex', n: 3 },
  ]);
});

t.test('a 10 MB text value round-trips unchanged', async (t) => {
  const f = await proxyFixture(t);
  const acme = await f.connect(f.userFor('acme'));
  const value = randomBytes(5 * 1024 * 1024).toString('hex'); // 10 MiB of text
  const { rows: inserted } = await acme.query<{ id: number }>(
    "insert into public.notes (tenant_id, body) values ('acme', $1) returning id",
    [value],
  );
  const id = inserted[0]!.id;
  const { rows } = await acme.query<{ body: string; length: number; hash: string }>(
    `select body, length(body) as length, encode(sha256(convert_to(body, 'UTF8')), 'hex') as hash
       from public.notes where id = $1`,
    [id],
  );
  t.equal(rows[0]!.length, value.length, 'the server stored every character');
  t.equal(rows[0]!.hash, sha256(value), 'the server stored the same bytes');
  t.equal(rows[0]!.body.length, value.length, 'the client read every character back');
  t.equal(sha256(rows[0]!.body), sha256(value), 'the client read the same bytes back');
  // And once more through the simple protocol (no parameters), in a single DataRow.
  const simple = await acme.query<{ body: string }>(
    `select body from public.notes where id = ${String(id)}`,
  );
  t.equal(sha256(simple.rows[0]!.body), sha256(value));
});

t.test('LISTEN/NOTIFY delivers a notification with payload between proxied sessions', async (t) => {
  const f = await proxyFixture(t);
  const listener = await f.connect(f.userFor('acme'));
  const sender = await f.connect(f.userFor('acme'));
  await listener.query('listen pgvpd_clients');
  const arrived = new Promise<pg.Notification>((resolve) => {
    listener.once('notification', resolve);
  });
  const { rows } = await sender.query<{ pid: number }>(
    "select pg_backend_pid() as pid, pg_notify('pgvpd_clients', 'hello from acme')",
  );
  let timer: NodeJS.Timeout | undefined;
  const notification = await Promise.race([
    arrived,
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => {
        resolve(undefined);
      }, 5000);
    }),
  ]);
  clearTimeout(timer);
  t.ok(notification, 'a notification arrived within 5 s');
  t.equal(notification?.channel, 'pgvpd_clients');
  t.equal(notification?.payload, 'hello from acme');
  t.equal(notification?.processId, rows[0]!.pid, 'sent by the other session');

  // A plain NOTIFY statement inside a transaction is delivered on commit.
  const second = new Promise<pg.Notification>((resolve) => {
    listener.once('notification', resolve);
  });
  await sender.query('begin');
  await sender.query("notify pgvpd_clients, 'on commit'");
  await sender.query('commit');
  t.equal((await second).payload, 'on commit');
});

t.test('each tenant sees only its rows, the bypass user sees all', async (t) => {
  const su = superuser(await adminUrl());
  const f = await proxyFixture(t, {
    superuser_bypass: [su.name],
    bypass_networks: ['127.0.0.1/32'],
  });
  const acme = await f.connect(f.userFor('acme'));
  const globex = await f.connect(f.userFor('globex'));
  const nobody = await f.connect(f.userFor('initech'));
  t.same(await visible(acme), { acme: 2, globex: 0, total: 2 });
  t.same(await visible(globex), { acme: 0, globex: 3, total: 3 });
  t.same(await visible(nobody), { acme: 0, globex: 0, total: 0 }, 'an unknown tenant sees none');
  const bypass = await f.connect(su.name, su.password);
  t.same(await visible(bypass), { acme: 2, globex: 3, total: 5 });
  const { rows } = await bypass.query<{ who: string; tenant: string | null }>(
    'select current_user as who, pgvpd.current_tenant_id() as tenant',
  );
  t.same(rows, [{ who: su.name, tenant: null }], 'the bypass session has no tenant context');
  // The tenants' sessions are unaffected by the bypass session next to them.
  t.same(await visible(acme), { acme: 2, globex: 0, total: 2 });
});
