// Rate limits per client address (docs/control-plane.md §2), through inject() so that the
// client's address can be chosen: an IPv6 client is keyed by its /64 (two addresses of one /64
// share a counter, another /64 has its own), an IPv4-mapped IPv6 address counts as the IPv4
// address, each group has its own counter, and the authenticated routes share rate_limit_api,
// counted before the token is checked. X-Forwarded-For counts only when the connecting peer is
// in admin_trust_proxy: unset, two forwarded addresses share one counter; set, each has its own.
// The admin and the public listener share the counters: a client has one quota across both.
import t from 'tap';
import { loadConfig } from '../../proxy/config.js';
import { adminFixture, injectableServer, request, type AdminFixture } from './admin-fixture.js';

t.test('validate: one counter per IPv4 address, per IPv6 /64, IPv4-mapped as IPv4', async (t) => {
  const f = await adminFixture(t, { rate_limit_public: 2 });
  const app = await injectableServer(t, f);
  const validate = async (remoteAddress: string): Promise<number> =>
    (await app.inject({ url: '/api/v1/validate/acme-analytics', remoteAddress })).statusCode;
  t.same(
    [
      await validate('2001:db8:1:2::1'),
      await validate('2001:db8:1:2::ffff'),
      await validate('2001:db8:1:2:abcd::9'),
    ],
    [200, 200, 429],
    'three addresses of one /64 share two requests',
  );
  t.equal(await validate('2001:db8:1:3::1'), 200, 'the next /64 has its own counter');
  t.same(
    [await validate('192.0.2.7'), await validate('::ffff:192.0.2.7'), await validate('192.0.2.7')],
    [200, 200, 429],
    'an IPv4-mapped address is its IPv4 address',
  );
  t.equal(await validate('192.0.2.8'), 200, 'the next IPv4 address has its own counter');
  const setup = await app.inject({ url: '/setup', remoteAddress: '192.0.2.7' });
  t.equal(setup.statusCode, 404, '/setup counts apart from validate (and is absent here)');
  const limited = await app.inject({
    url: '/api/v1/validate/acme-analytics',
    remoteAddress: '192.0.2.7',
  });
  t.equal(limited.headers['cache-control'], 'no-store');
  t.match(limited.headers['retry-after'], /^[1-9][0-9]*$/);
  t.match(limited.json(), { error: 'too_many_requests' });
});

t.test('authenticated routes share rate_limit_api, counted before the token', async (t) => {
  const f = await adminFixture(t, { rate_limit_api: 3 });
  const app = await injectableServer(t, f);
  const operator = await f.token('operator');
  const get = async (url: string, token?: string): Promise<number> =>
    (
      await app.inject({
        url,
        remoteAddress: '198.51.100.1',
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      })
    ).statusCode;
  t.same(
    [
      await get('/api/v1/status', operator),
      await get('/metrics', operator),
      await get('/api/v1/status', 'pgvpd_tok_guess'),
      await get('/api/v1/status', operator),
      await get(`/api/v1/orgs/${f.orgs.acme}`, operator),
    ],
    [200, 200, 401, 429, 429],
    'three requests a minute across the routes, a refused token counted too',
  );
  const health = await app.inject({ url: '/healthz', remoteAddress: '198.51.100.1' });
  t.equal(health.statusCode, 200, 'health is not limited');
});

/** POSTs a dead invite to /api/v1/invites/info over the socket, with X-Forwarded-For. */
async function infoFrom(f: AdminFixture, forwardedFor: string): Promise<number> {
  const answer = await f.http('/api/v1/invites/info', {
    method: 'POST',
    json: { invite: 'pgvpd_inv_dead' },
    headers: { 'x-forwarded-for': forwardedFor },
  });
  return answer.status;
}

t.test('without admin_trust_proxy, X-Forwarded-For is ignored: one counter', async (t) => {
  const f = await adminFixture(t);
  const statuses: number[] = [];
  for (let i = 0; i < 10; i++) statuses.push(await infoFrom(f, `192.0.2.${String(i % 2)}`));
  t.same(statuses, Array(10).fill(410), 'ten invite requests a minute, whatever the header says');
  t.equal(await infoFrom(f, '192.0.2.77'), 429, 'the eleventh is refused, another header or not');
});

t.test('with admin_trust_proxy, each forwarded address has its own counter', async (t) => {
  const f = await adminFixture(t, { admin_trust_proxy: ['127.0.0.1'] });
  const statuses: number[] = [];
  for (let i = 0; i < 10; i++) statuses.push(await infoFrom(f, '192.0.2.1'));
  t.same(statuses, Array(10).fill(410), 'ten from 192.0.2.1');
  const refused = await f.http('/api/v1/invites/info', {
    method: 'POST',
    json: { invite: 'pgvpd_inv_dead' },
    headers: { 'x-forwarded-for': '192.0.2.1' },
  });
  t.equal(refused.status, 429, 'the eleventh from 192.0.2.1 is refused');
  t.match(refused.json, { error: 'too_many_requests' });
  t.equal(await infoFrom(f, '192.0.2.2'), 410, '192.0.2.2 still has its own ten');
  t.equal(await infoFrom(f, '203.0.113.9, 192.0.2.3'), 410, 'the nearest untrusted hop counts');
  t.equal(
    (await f.http('/api/v1/invites/info', { method: 'POST', json: { invite: 'pgvpd_inv_dead' } }))
      .status,
    410,
    'the proxy itself, without the header, is one more client',
  );
});

t.test('the admin and the public listener share one counter per client', async (t) => {
  const f = await adminFixture(t, { rate_limit_public: 2, public_port: 0 });
  const publicBase = `http://127.0.0.1:${String(f.proxy.publicPort)}`;
  const validate = async (base: string): Promise<number> =>
    (await request(base, '/api/v1/validate/acme-analytics')).status;
  t.same(
    [await validate(f.base), await validate(publicBase), await validate(f.base)],
    [200, 200, 429],
    'two a minute across both listeners, not two on each',
  );
  t.equal(await validate(publicBase), 429, 'refused on the public listener too');
});

t.test('admin_trust_proxy takes addresses and networks, and refuses anything else', (t) => {
  const config = loadConfig({ env: { PGVPD_ADMIN_TRUST_PROXY: '10.0.0.5, 10.1.0.0/16, ::1' } });
  t.same(config.admin_trust_proxy, ['10.0.0.5', '10.1.0.0/16', '::1']);
  t.throws(() => loadConfig({ env: { PGVPD_ADMIN_TRUST_PROXY: '10.0.0.5,proxy.local' } }), {
    message:
      'admin_trust_proxy: "proxy.local" is not an address or network (e.g. 10.0.0.5 or 10.0.0.0/8) (set in environment PGVPD_ADMIN_TRUST_PROXY)',
  });
  t.end();
});
