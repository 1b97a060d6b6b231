// Rate limits per client address (docs/control-plane.md §2), through inject() so that the
// client's address can be chosen: an IPv6 client is keyed by its /64 (two addresses of one /64
// share a counter, another /64 has its own), an IPv4-mapped IPv6 address counts as the IPv4
// address, each group has its own counter, and the authenticated routes share rate_limit_api,
// counted before the token is checked.
import t from 'tap';
import { adminFixture, injectableServer } from './admin-fixture.js';

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
