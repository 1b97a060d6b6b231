// The catalog snapshot outlives its connection: with the catalog connection killed, clients are
// still routed and authenticated from the last snapshot, and once the proxy has reconnected (it
// retries every second) it sees changes again.
import t from 'tap';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import { orgFixture } from './org-fixture.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

t.test('a lost catalog connection keeps the snapshot in service and reconnects', async (t) => {
  const f = await orgFixture(t);
  const killed = await f.db.query<{ n: number }>(
    `select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
      where application_name = 'pgvpd-catalog' and datname = current_database()`,
  );
  t.equal(killed.rows[0]!.n, 1, 'the catalog connection was ended');
  const meanwhile = await f.connect('acme-analytics', 'alice', 'alice-at-acme');
  const tenant = await meanwhile.query<{ t: string }>('select pgvpd.current_tenant_id() as t');
  t.equal(tenant.rows[0]!.t, f.orgs.acme, 'routed and authenticated from the last snapshot');

  // Reconnection takes about a second; then a change made now must reach the proxy.
  await sleep(2500);
  await f.db.query('select pgvpd.user_add($1, $2, $3, $4)', [
    f.orgs.acme,
    'bob',
    makeVerifier('bob-pass'),
    f.connectAs,
  ]);
  await sleep(1000);
  const bob = await f.connect('acme-analytics', 'bob', 'bob-pass');
  const seen = await bob.query<{ u: string }>(`select pgvpd.context('user') as u`);
  t.equal(seen.rows[0]!.u, 'bob', 'a user added after the reconnect can log in');
});
