// Org mode's drain: after the shutdown timeout a lent session is ended by PostgreSQL itself
// (pgvpd.end_session), so the client reads a well-formed FATAL 57P01, and the proxy closes.
import t from 'tap';
import { orgFixture } from './org-fixture.js';

t.test('closing the proxy ends a lent session with 57P01 after the timeout', async (t) => {
  const f = await orgFixture(t);
  const client = await f.connect('acme-analytics', 'alice', 'alice-at-acme');
  const ended = new Promise<{ code?: string }>((resolve) => {
    client.on('error', (error: Error & { code?: string }) => {
      resolve(error);
    });
  });
  const tenant = await client.query<{ t: string }>('select pgvpd.current_tenant_id() as t');
  t.equal(tenant.rows[0]!.t, f.orgs.acme);
  const started = Date.now();
  await f.proxy.close(1);
  t.equal((await ended).code, '57P01', 'the client got PostgreSQL’s admin shutdown');
  t.ok(Date.now() - started >= 900, 'not before the shutdown timeout');
  t.equal(f.proxy.sessionCount(), 0, 'no session is left');
});
