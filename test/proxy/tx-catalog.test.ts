// Sticky contexts follow the catalog (docs/transaction-pooling.md, "Readying a backend"): a
// backend keeps its owner's context between transactions, but any catalog change makes every
// backend switch its context in again at its next checkout, where switch_context checks the
// role and the org again and reruns the resolvers; and a context older than context_max_age is
// switched in again. So an org suspended while its clients are connected in transaction mode
// loses them at their next transaction, a user removed likewise, and a resolver added reaches the
// next transaction.
import t from 'tap';
import { orgFixture } from './org-fixture.js';
import { openClient } from './org-support.js';
import { waitFor } from './clients-support.js';

const f = await orgFixture(t, { pool_mode: 'transaction', pool_size: 1 });
const acme = {
  port: f.proxy.port,
  database: 'acme-analytics',
  user: 'alice',
  password: 'alice-at-acme',
};
const beta = { port: f.proxy.port, database: 'beta-db', user: 'alice', password: 'alice-at-beta' };

/** How many switch grants the backend `pid` has taken (its record's seq), or null. */
async function seqOf(pid: number): Promise<number | null> {
  const { rows } = await f.db.query<{ seq: string | null }>(
    'select seq::text from pgvpd_private.session_context where pid = $1',
    [pid],
  );
  return rows[0]?.seq === undefined || rows[0].seq === null ? null : Number(rows[0].seq);
}

t.test('a same-owner transaction costs no switch; a catalog change costs one', async (t) => {
  const client = await openClient(t, acme);
  const pid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
  const before = await seqOf(pid);
  for (let i = 0; i < 5; i += 1) await client.query('select 1');
  t.equal(await seqOf(pid), before, 'five transactions of the same owner: no switch');
  // Any catalog change (here a server added and removed) makes contexts switch in anew.
  await f.db.query(`select pgvpd.server_add('tx-catalog-s', 'db-x', 5432)`);
  await f.db.query(`select pgvpd.server_remove('tx-catalog-s')`).catch(() => undefined);
  t.ok(
    await waitFor(async () => {
      await client.query('select 1');
      return (await seqOf(pid)) !== before;
    }),
    'after the catalog notification the next transaction switched the context in again',
  );
  const { rows } = await client.query<{ tenant: string }>(
    'select pgvpd.current_tenant_id() as tenant',
  );
  t.same(rows, [{ tenant: f.orgs.acme }], 'still acme');
});

t.test(
  'an org suspended while its client is connected loses it at its next transaction',
  async (t) => {
    const client = await openClient(t, beta);
    const errors: Error[] = [];
    client.on('error', (error) => errors.push(error));
    t.same((await client.query('select count(*)::int as n from public.docs')).rows, [{ n: 3 }]);
    await f.db.query('select pgvpd.org_suspend($1)', [f.orgs.beta]);
    t.teardown(() => f.db.query('select pgvpd.org_resume($1)', [f.orgs.beta]));
    let refused: unknown;
    let answered = 0;
    await waitFor(async () => {
      try {
        await client.query('select count(*)::int as n from public.docs');
        answered += 1;
        return false;
      } catch (error) {
        refused = error;
        return true;
      }
    });
    t.match(
      refused,
      { code: '28000', message: 'could not establish the tenant context for this session' },
      'FATAL 28000 at the transaction after the catalog reload',
    );
    t.ok(
      answered <= 3,
      `at most the transactions before the reload were served (${String(answered)})`,
    );
    // The other org on the same backend is served as before.
    const other = await openClient(t, acme);
    t.same((await other.query('select count(*)::int as n from public.docs')).rows, [{ n: 2 }]);
  },
);

t.test('a resolver added reaches the next transaction of a connected client', async (t) => {
  const client = await openClient(t, acme);
  t.same((await client.query(`select pgvpd.context('plan') as plan`)).rows, [{ plan: null }]);
  await f.db.query(
    `create function public.tx_catalog_plan(p_context jsonb) returns jsonb language sql
     as $$ select jsonb_build_object('plan', 'gold-' || (p_context ->> 'user')) $$`,
  );
  t.teardown(async () => {
    await f.db.query('delete from pgvpd_private.resolvers');
    await f.db.query('drop function public.tx_catalog_plan(jsonb)');
  });
  await f.db.query(`select pgvpd.resolver_add('public.tx_catalog_plan(jsonb)'::regprocedure, 1)`);
  t.ok(
    await waitFor(async () => {
      const { rows } = await client.query<{ plan: string | null }>(
        `select pgvpd.context('plan') as plan`,
      );
      return rows[0]?.plan === 'gold-alice';
    }),
    'the resolver value arrives without reconnecting',
  );
});

t.test('a context older than context_max_age is switched in again', async (t) => {
  const g = await orgFixture(t, { pool_mode: 'transaction', pool_size: 1, context_max_age: 0.5 });
  const client = await openClient(t, { ...acme, port: g.proxy.port });
  const pid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
  const seq = async (): Promise<number | null> => {
    const { rows } = await g.db.query<{ seq: string | null }>(
      'select seq::text from pgvpd_private.session_context where pid = $1',
      [pid],
    );
    return rows[0]?.seq ? Number(rows[0].seq) : null;
  };
  const first = await seq();
  await client.query('select 1');
  t.equal(await seq(), first, 'within the age: no switch');
  await new Promise((resolve) => setTimeout(resolve, 700));
  await client.query('select 1');
  t.equal(await seq(), (first ?? 0) + 1, 'past it: one switch');
});
