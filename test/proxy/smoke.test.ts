import t from 'tap';
import { proxyFixture, visible } from './fixture.js';

t.test('a tenant connected through the proxy sees only its own rows', async (t) => {
  const f = await proxyFixture(t);
  const acme = await f.connect(f.userFor('acme'));
  t.same(await visible(acme), { acme: 2, globex: 0, total: 2 });
  const { rows } = await acme.query<{ tenant: string }>(
    'select pgvpd.current_tenant_id() as tenant',
  );
  t.equal(rows[0]!.tenant, 'acme');
  const globex = await f.connect(f.userFor('globex'));
  t.same(await visible(globex), { acme: 0, globex: 3, total: 3 });
});
