// NOTIFY pgvpd_catalog: every change to servers, orgs, org users and reserved names reaches a
// LISTENing connection once committed, with an empty payload: any role may LISTEN, so the
// notification says that something changed and nothing of what (the proxies reload the snapshot).
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { createTestDatabase } from '../support/postgres.js';
import { connect, installPgvpd, loginRole } from '../support/pgvpd.js';

const db = await createTestDatabase(t);
await installPgvpd(db);
const adminRole = await loginRole(t, db, 'admin');
const admin = await adminRole.connect();
t.teardown(() => admin.end());
const app = await loginRole(t, db, 'app');

const received: string[] = [];
const listener = await connect(db.url);
t.teardown(() => listener.end());
listener.on('notification', (message) => {
  if (message.channel === 'pgvpd_catalog') received.push(message.payload ?? '');
});
await listener.query('listen pgvpd_catalog');

/**
 * Runs `sql` as the admin and returns its rows and the notifications that followed it. Notifications
 * arrive in commit order; a marker NOTIFY sent afterwards on the same connection arrives after
 * them, so everything received up to the marker is this statement's (every change in this file
 * goes through here).
 */
async function run(
  sql: string,
  params: unknown[] = [],
): Promise<{ rows: Record<string, string>[]; payloads: string[] }> {
  const rows = await admin.query<Record<string, string>>(sql, params).then(
    (result) => result.rows,
    () => [],
  );
  const marker = randomBytes(6).toString('hex');
  await admin.query(`select pg_notify('pgvpd_catalog', $1)`, [marker]);
  const deadline = Date.now() + 5000;
  while (!received.includes(marker)) {
    if (Date.now() > deadline) throw new Error('the marker notification never arrived');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const batch = received.splice(0, received.indexOf(marker) + 1).slice(0, -1);
  return { rows, payloads: batch };
}

async function notificationsOf(sql: string, params: unknown[] = []): Promise<string[]> {
  return (await run(sql, params)).payloads;
}

const verifier = `SCRAM-SHA-256$4096:${randomBytes(16).toString('base64')}$${randomBytes(32).toString('base64')}:${randomBytes(32).toString('base64')}`;
let orgId = '';

t.test('each kind of change notifies once per statement, with an empty payload', async (t) => {
  t.same(await notificationsOf(`select pgvpd.server_add('n1', 'host-n1', 5432)`), ['']);
  t.same(await notificationsOf(`select pgvpd.reserved_name_add('kept')`), ['']);
  t.same(await notificationsOf(`select pgvpd.reserved_name_remove('kept')`), ['']);
  const created = await run(`select pgvpd.org_create('N', 'notified') as id`);
  orgId = created.rows[0]!.id!;
  t.same(created.payloads, ['']);
  t.same(await notificationsOf('select pgvpd.org_suspend($1)', [orgId]), ['']);
  t.same(await notificationsOf('select pgvpd.org_resume($1)', [orgId]), ['']);
  t.same(
    await notificationsOf('select pgvpd.user_add($1, $2, $3, $4)', [
      orgId,
      'nora',
      verifier,
      app.name,
    ]),
    [''],
  );
  t.same(
    await notificationsOf('select pgvpd.user_set_verifier($1, $2, $3)', [orgId, 'nora', verifier]),
    [''],
  );
  t.same(await notificationsOf('select pgvpd.user_remove($1, $2)', [orgId, 'nora']), ['']);
  await run('select pgvpd.user_add($1, $2, $3, $4)', [orgId, 'nils', verifier, app.name]);
  // Two tables change (org_users by cascade, then orgs): PostgreSQL folds the identical
  // notifications of one transaction into one.
  t.same(await notificationsOf('select pgvpd.org_remove($1)', [orgId]), ['']);
  t.same(await notificationsOf(`select pgvpd.server_remove('n1')`), ['']);
});

t.test('finding 1: LISTEN pgvpd_catalog by a tenant role learns no org id or name', async (t) => {
  const tenant = await app.connect();
  t.teardown(() => tenant.end());
  const heard: string[] = [];
  tenant.on('notification', (message) => heard.push(message.payload ?? ''));
  await tenant.query('listen pgvpd_catalog');
  const created = await run(`select pgvpd.org_create('Secretive Inc', 'secretive') as id`);
  const id = created.rows[0]!.id!;
  await run('select pgvpd.user_add($1, $2, $3, $4)', [id, 'sam', verifier, app.name]);
  await run('select pgvpd.user_set_verifier($1, $2, $3)', [id, 'sam', verifier]);
  await run('select pgvpd.org_suspend($1)', [id]);
  // The admin's marker after the last change reaches the tenant too: then it has heard it all.
  const marker = randomBytes(6).toString('hex');
  await admin.query(`select pg_notify('pgvpd_catalog', $1)`, [marker]);
  const deadline = Date.now() + 5000;
  while (!heard.includes(marker)) {
    if (Date.now() > deadline) throw new Error('the marker notification never reached the tenant');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const changes = heard.filter((payload) => !/^[0-9a-f]{12}$/.test(payload));
  t.same(changes, ['', '', '', ''], 'one empty notification per change, nothing more');
  for (const payload of heard) {
    for (const secret of [id, 'secretive', 'Secretive', 'sam', 'SCRAM'])
      t.notOk(payload.includes(secret), `no ${secret} in ${JSON.stringify(payload)}`);
  }
});

t.test('a rolled-back change, a refused one and a no-op notify nobody', async (t) => {
  const id = (await run(`select pgvpd.org_create('Q', 'quiet') as id`)).rows[0]!.id!;
  t.same(
    await notificationsOf(
      `begin; select pgvpd.org_suspend('${id}'); select pgvpd.server_add('n2', 'h', 1); rollback`,
    ),
    [],
    'rolled back',
  );
  t.same(await notificationsOf(`select pgvpd.org_create('Q', 'quiet')`), [], 'refused');
  t.same(await notificationsOf('select pgvpd.org_resume($1)', [id]), [], 'already active');
});

t.test('a statement that changes more than 100 rows sends one notification', async (t) => {
  // Only pgvpd_admin writes the tables directly; a bulk change is what an operator script does.
  const payloads = await notificationsOf(
    `insert into pgvpd_private.reserved_names select 'bulk-' || g from generate_series(1, 101) g`,
  );
  t.same(payloads, ['']);
  t.same(
    await notificationsOf(`delete from pgvpd_private.reserved_names where name like 'bulk-%'`),
    [''],
  );
});
