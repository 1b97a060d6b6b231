// The test harness itself: later suites rely on every property checked here.
import pg from 'pg';
import t from 'tap';
import { adminUrl, createTestDatabase, serverInfo, testRoles } from './support/postgres.js';

async function connectAs(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  // A session terminated by a database drop reports an error event; it is expected here.
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

async function queryOnce<R extends pg.QueryResultRow>(url: string, sql: string): Promise<R[]> {
  const client = await connectAs(url);
  try {
    return (await client.query<R>(sql)).rows;
  } finally {
    await client.end();
  }
}

t.test('the shared server answers and is one server for the whole run', async (t) => {
  const info = await serverInfo();
  t.ok(
    ['url', 'container', 'system', 'embedded'].includes(info.kind),
    `server kind is ${info.kind}`,
  );
  t.ok(info.version >= 13, `server major version ${info.version} is at least 13`);
  const first = await createTestDatabase(t);
  const second = await createTestDatabase(t);
  t.not(first.name, second.name, 'each call creates its own database');
  const sql = 'select pg_postmaster_start_time()::text as started, current_database() as db';
  const [a] = (await first.query<{ started: string; db: string }>(sql)).rows;
  const [b] = (await second.query<{ started: string; db: string }>(sql)).rows;
  t.equal(a?.db, first.name, 'the first handle is connected to its database');
  t.equal(b?.db, second.name, 'the second handle is connected to its database');
  t.equal(a?.started, b?.started, 'both databases live in the same postmaster');
  const [viaAdmin] = await queryOnce<{ started: string }>(await adminUrl(), sql);
  t.equal(viaAdmin?.started, a?.started, 'the admin URL reaches the same postmaster');
});

t.test('a database created for a test is isolated from another one', async (t) => {
  const first = await createTestDatabase(t);
  const second = await createTestDatabase(t);
  await first.query('create table only_in_first (id int)');
  const inFirst = await first.query("select to_regclass('public.only_in_first') as oid");
  const inSecond = await second.query("select to_regclass('public.only_in_first') as oid");
  t.not(inFirst.rows[0]?.oid, null, 'the table exists where it was created');
  t.equal(inSecond.rows[0]?.oid, null, 'the table is absent from the other database');
});

t.test('a database is dropped when its test ends', async (t) => {
  let name = '';
  await t.test('inner test that owns a database', async (t) => {
    const db = await createTestDatabase(t);
    name = db.name;
    // An open session must not keep the database alive past teardown.
    const client = await connectAs(db.url);
    t.teardown(() => client.end().catch(() => undefined));
    t.pass(`created ${db.name}`);
  });
  const rows = await queryOnce<{ count: string }>(
    await adminUrl(),
    `select count(*) from pg_database where datname = '${name}'`,
  );
  t.equal(rows[0]?.count, '0', 'the database no longer exists');
});

t.test('the SCRAM user logs in with its password and is refused with a wrong one', async (t) => {
  const db = await createTestDatabase(t);
  const { user, password } = testRoles.scram;
  const rows = await queryOnce<{ who: string }>(
    db.urlFor(user, password),
    'select current_user as who',
  );
  t.equal(rows[0]?.who, user, 'logged in as the SCRAM user');
  const stored = await db.query<{ scram: boolean }>(
    "select rolpassword like 'SCRAM-SHA-256$%' as scram from pg_authid where rolname = $1",
    [user],
  );
  t.equal(stored.rows[0]?.scram, true, 'pg_authid holds a SCRAM verifier');
  await t.rejects(
    connectAs(db.urlFor(user, 'wrong-pass')),
    { code: '28P01' },
    'a wrong password fails with invalid_password (28P01)',
  );
});

t.test('the MD5 user logs in with its password and is stored as an md5 hash', async (t) => {
  const db = await createTestDatabase(t);
  const { user, password } = testRoles.md5;
  const rows = await queryOnce<{ who: string }>(
    db.urlFor(user, password),
    'select current_user as who',
  );
  t.equal(rows[0]?.who, user, 'logged in as the MD5 user');
  const stored = await db.query<{ md5: boolean }>(
    "select rolpassword like 'md5%' as md5 from pg_authid where rolname = $1",
    [user],
  );
  t.equal(stored.rows[0]?.md5, true, 'pg_authid holds an md5 hash');
  await t.rejects(
    connectAs(db.urlFor(user, 'wrong-pass')),
    { code: '28P01' },
    'a wrong password fails with invalid_password (28P01)',
  );
});

t.test('the trust user logs in without a password', async (t) => {
  const db = await createTestDatabase(t);
  const { user } = testRoles.trust;
  const rows = await queryOnce<{ who: string; superuser: string }>(
    db.urlFor(user),
    "select current_user as who, current_setting('is_superuser') as superuser",
  );
  t.equal(rows[0]?.who, user, 'logged in as the trust user');
  t.equal(rows[0]?.superuser, 'off', 'the trust user is not a superuser');
});
