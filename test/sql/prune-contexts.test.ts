// pgvpd.prune_contexts forgets only records of backends that have ended, whatever the calling
// transaction read before: PostgreSQL caches backend activity for a transaction once it is read,
// and a backend that started after that read (its record committed by another control
// connection) was pruned as if it had ended; its set_context then failed with 28000 "context
// token is no longer current for this backend" (seen under connection churn through the proxy).
import t from 'tap';
import { createTestDatabase } from '../support/postgres.js';
import { backendPid, connect, giveContext, installPgvpd, loginRole } from '../support/pgvpd.js';

const db = await createTestDatabase(t);
await installPgvpd(db);
const app = await loginRole(t, db, 'app');
const proxyRole = await loginRole(t, db, 'proxy');

t.test('a record committed after the transaction first read activity is not pruned', async (t) => {
  const pruner = await connect(db.url);
  t.teardown(() => pruner.end());
  await pruner.query('begin');
  // The transaction's activity snapshot is taken here, before the new backend exists.
  await pruner.query('select count(*) from pg_catalog.pg_stat_activity');

  const session = await app.connect();
  t.teardown(() => session.end());
  const control = await proxyRole.connect();
  t.teardown(() => control.end());
  await giveContext(control, session, 'acme');
  const pid = await backendPid(session);

  await pruner.query('select pgvpd.prune_contexts()');
  await pruner.query('commit');
  const { rows } = await db.query<{ n: number }>(
    'select count(*)::int as n from pgvpd_private.session_context where pid = $1',
    [pid],
  );
  t.equal(rows[0]?.n, 1, 'the new backend keeps its record');
  const tenant = await session.query<{ tenant: string | null }>(
    'select pgvpd.current_tenant_id() as tenant',
  );
  t.equal(tenant.rows[0]?.tenant, 'acme', 'and its context');
});

t.test('a record of a backend that has ended is pruned', async (t) => {
  const session = await app.connect();
  const control = await proxyRole.connect();
  t.teardown(() => control.end());
  await giveContext(control, session, 'acme');
  const pid = await backendPid(session);
  await session.end();
  // The backend is gone once pg_stat_activity no longer lists it.
  for (let i = 0; i < 100; i++) {
    const { rows } = await db.query('select 1 from pg_catalog.pg_stat_activity where pid = $1', [pid]);
    if (rows.length === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await db.query('select pgvpd.prune_contexts()');
  const { rows } = await db.query<{ n: number }>(
    'select count(*)::int as n from pgvpd_private.session_context where pid = $1',
    [pid],
  );
  t.equal(rows[0]?.n, 0, 'its record is gone');
});
