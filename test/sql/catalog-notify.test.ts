// NOTIFY pgvpd_catalog: every change to servers, orgs, org users and reserved names reaches a
// LISTENing connection once committed, with a short payload and no secrets.
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

interface Payload {
  table: string;
  op: string;
  id: string | null;
}

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
): Promise<{ rows: Record<string, string>[]; payloads: Payload[] }> {
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
  return { rows, payloads: batch.map((p) => JSON.parse(p) as Payload) };
}

async function notificationsOf(sql: string, params: unknown[] = []): Promise<Payload[]> {
  return (await run(sql, params)).payloads;
}

const verifier = `SCRAM-SHA-256$4096:${randomBytes(16).toString('base64')}$${randomBytes(32).toString('base64')}:${randomBytes(32).toString('base64')}`;
let orgId = '';

t.test('each kind of change notifies with the table, the operation and the key', async (t) => {
  t.same(await notificationsOf(`select pgvpd.server_add('n1', 'host-n1', 5432)`), [
    { table: 'servers', op: 'INSERT', id: 'n1' },
  ]);
  t.same(await notificationsOf(`select pgvpd.reserved_name_add('kept')`), [
    { table: 'reserved_names', op: 'INSERT', id: 'kept' },
  ]);
  t.same(await notificationsOf(`select pgvpd.reserved_name_remove('kept')`), [
    { table: 'reserved_names', op: 'DELETE', id: 'kept' },
  ]);
  const created = await run(`select pgvpd.org_create('N', 'notified') as id`);
  orgId = created.rows[0]!.id!;
  t.same(created.payloads, [{ table: 'orgs', op: 'INSERT', id: orgId }]);
  t.same(await notificationsOf('select pgvpd.org_suspend($1)', [orgId]), [
    { table: 'orgs', op: 'UPDATE', id: orgId },
  ]);
  t.same(await notificationsOf('select pgvpd.org_resume($1)', [orgId]), [
    { table: 'orgs', op: 'UPDATE', id: orgId },
  ]);
  t.same(
    await notificationsOf('select pgvpd.user_add($1, $2, $3, $4)', [
      orgId,
      'nora',
      verifier,
      app.name,
    ]),
    [{ table: 'org_users', op: 'INSERT', id: orgId }],
  );
  t.same(
    await notificationsOf('select pgvpd.user_set_verifier($1, $2, $3)', [orgId, 'nora', verifier]),
    [{ table: 'org_users', op: 'UPDATE', id: orgId }],
  );
  t.same(await notificationsOf('select pgvpd.user_remove($1, $2)', [orgId, 'nora']), [
    { table: 'org_users', op: 'DELETE', id: orgId },
  ]);
  await run('select pgvpd.user_add($1, $2, $3, $4)', [orgId, 'nils', verifier, app.name]);
  t.same(await notificationsOf('select pgvpd.org_remove($1)', [orgId]), [
    { table: 'org_users', op: 'DELETE', id: orgId },
    { table: 'orgs', op: 'DELETE', id: orgId },
  ]);
  t.same(await notificationsOf(`select pgvpd.server_remove('n1')`), [
    { table: 'servers', op: 'DELETE', id: 'n1' },
  ]);
});

t.test('no payload carries a verifier or a username', async (t) => {
  const created = await run(`select pgvpd.org_create('S', 'secretive') as id`);
  const id = created.rows[0]!.id!;
  const added = await notificationsOf('select pgvpd.user_add($1, $2, $3, $4)', [
    id,
    'sam',
    verifier,
    app.name,
  ]);
  const all = [...created.payloads, ...added];
  const payloads = await notificationsOf('select pgvpd.user_set_verifier($1, $2, $3)', [
    id,
    'sam',
    verifier,
  ]);
  t.equal(payloads.length, 1);
  all.push(...payloads);
  for (const payload of all.map((p) => JSON.stringify(p))) {
    t.notOk(payload.includes('SCRAM'), payload);
    t.notOk(payload.includes('sam'), payload);
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

t.test('a statement that changes more than 100 rows sends one reload notification', async (t) => {
  // Only pgvpd_admin writes the tables directly; a bulk change is what an operator script does.
  const payloads = await notificationsOf(
    `insert into pgvpd_private.reserved_names select 'bulk-' || g from generate_series(1, 101) g`,
  );
  t.same(payloads, [{ table: 'reserved_names', op: 'INSERT', id: null }]);
  t.same(
    await notificationsOf(`delete from pgvpd_private.reserved_names where name like 'bulk-%'`),
    [{ table: 'reserved_names', op: 'DELETE', id: null }],
  );
});
