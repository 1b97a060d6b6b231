// The control plane's doors (docs/control-plane.md §2): it binds 127.0.0.1 by default; health
// needs no token; every other route's class is enforced from the matched route: 401 with one body
// and WWW-Authenticate for a missing, unknown, malformed or revoked token, 403 for a token of
// another scope or org (also on an org that does not exist, and on provisioning); revocation
// takes effect on the very next request; every /api/v1 answer says no-store.
import { networkInterfaces } from 'node:os';
import t from 'tap';
import { waitFor } from '../proxy/clients-support.js';
import { adminFixture } from './admin-fixture.js';

/** GET /api/v1/status's body in org mode (docs/control-plane.md §2). */
interface StatusBody {
  version: string;
  mode: string;
  draining: boolean;
  sessions: { total: number; by_phase: Record<string, number> };
  pool_mode: string;
  pool: { busy: number; keys: { database: string; role: string }[] };
  catalog: {
    orgs: number;
    users: number;
    connected: boolean;
    pool_modes: { session: number; transaction: number };
  };
  instances: {
    server: string | null;
    database: string;
    instance: string;
    registered_at: string;
    lease_until: string;
  }[];
}

const unauthorized = '{"error":"unauthorized","message":"a valid API token is required"}';
const forbidden = '{"error":"forbidden","message":"this token is not allowed here"}';

t.test('the admin listener binds 127.0.0.1 unless told otherwise', async (t) => {
  const f = await adminFixture(t);
  t.match(f.base, /^http:\/\/127\.0\.0\.1:\d+$/);
  t.equal(f.proxy.runtime.config.admin_host, '127.0.0.1');
  const health = await f.http('/healthz');
  t.equal(health.status, 200);
  t.equal(health.text, '{"status":"ok"}');
  t.equal(health.headers.get('x-content-type-options'), 'nosniff');
  t.equal(health.headers.get('referrer-policy'), 'no-referrer');
  t.equal(health.headers.get('access-control-allow-origin'), null, 'no CORS');
  t.equal(health.headers.get('set-cookie'), null, 'no cookie');
  const port = new URL(f.base).port;
  const outside = Object.values(networkInterfaces())
    .flat()
    .find((address) => address !== undefined && !address.internal && address.family === 'IPv4');
  if (outside === undefined) {
    t.comment('no non-loopback IPv4 address on this machine: the outside probe is not run');
  } else {
    await t.rejects(
      fetch(`http://${outside.address}:${port}/healthz`),
      `nothing answers on ${outside.address}`,
    );
  }
});

t.test(
  'metrics: 401 without a token, 403 with an org token, 200 with a metrics token',
  async (t) => {
    const f = await adminFixture(t);
    const none = await f.http('/metrics');
    t.equal(none.status, 401);
    t.equal(none.text, unauthorized);
    t.equal(none.headers.get('www-authenticate'), 'Bearer');
    const org = await f.http('/metrics', { token: await f.token('org', f.orgs.acme) });
    t.equal(org.status, 403);
    t.equal(org.text, forbidden);
    const metrics = await f.http('/metrics', { token: await f.token('metrics') });
    t.equal(metrics.status, 200);
    t.match(metrics.headers.get('content-type'), /^text\/plain/);
    t.match(metrics.text, /^pgvpd_/m);
    const operator = await f.http('/metrics', { token: await f.token('operator') });
    t.equal(operator.status, 200, 'an operator token may scrape too');
  },
);

t.test('unknown, malformed and revoked tokens get the same 401, revocation at once', async (t) => {
  const f = await adminFixture(t);
  const token = await f.token('operator');
  const before = await f.http('/api/v1/status', { token });
  t.equal(before.status, 200);
  await f.db.query(
    'select pgvpd.token_revoke(id) from pgvpd.tokens() where revoked_at is null and scope = $1',
    ['operator'],
  );
  const answers = {
    revoked: await f.http('/api/v1/status', { token }),
    unknown: await f.http('/api/v1/status', { token: `pgvpd_tok_${'0'.repeat(72)}` }),
    malformed: await f.http('/api/v1/status', { token: 'not-a-token' }),
    'no bearer scheme': await f.http('/api/v1/status', { headers: { authorization: token } }),
    none: await f.http('/api/v1/status'),
  };
  for (const [kind, answer] of Object.entries(answers)) {
    t.equal(answer.status, 401, `${kind}: 401`);
    t.equal(answer.text, unauthorized, `${kind}: the one body`);
    t.equal(answer.headers.get('www-authenticate'), 'Bearer', `${kind}: WWW-Authenticate`);
    t.equal(answer.headers.get('cache-control'), 'no-store', `${kind}: no-store`);
  }
});

t.test('an org token gets 403 on another org, a missing org and provisioning', async (t) => {
  const f = await adminFixture(t);
  const acme = await f.token('org', f.orgs.acme);
  const own = await f.http(`/api/v1/orgs/${f.orgs.acme}`, { token: acme });
  t.equal(own.status, 200, 'its own org');
  t.equal((own.json as { database_name: string }).database_name, 'acme-analytics');
  const cases = {
    'another org': await f.http(`/api/v1/orgs/${f.orgs.beta}`, { token: acme }),
    'an org that does not exist': await f.http(
      '/api/v1/orgs/00000000-0000-4000-8000-000000000000',
      { token: acme },
    ),
    'another org’s users': await f.http(`/api/v1/orgs/${f.orgs.beta}/users`, { token: acme }),
    provisioning: await f.http('/api/v1/orgs/00000000-0000-4000-8000-000000000001/provision', {
      method: 'POST',
      token: acme,
      json: {},
    }),
    'its own org’s provisioning': await f.http(`/api/v1/orgs/${f.orgs.acme}/provision`, {
      method: 'POST',
      token: acme,
      json: {},
    }),
    status: await f.http('/api/v1/status', { token: acme }),
    'database names': await f.http('/api/v1/database-names/some-name', { token: acme }),
  };
  for (const [kind, answer] of Object.entries(cases)) {
    t.equal(answer.status, 403, `${kind}: 403`);
    t.equal(answer.text, forbidden, `${kind}: the one body`);
    t.equal(answer.headers.get('cache-control'), 'no-store', `${kind}: no-store`);
  }
  const metrics = await f.token('metrics');
  const org = await f.http(`/api/v1/orgs/${f.orgs.acme}`, { token: metrics });
  t.equal(org.status, 403, 'a metrics token reads no org');
});

t.test('the status report is the runtime record, for operators', async (t) => {
  const f = await adminFixture(t);
  await f.connect('acme-analytics', 'alice', 'alice-at-acme');
  const operator = await f.token('operator');
  const status = await f.http('/api/v1/status', { token: operator });
  t.equal(status.status, 200);
  t.equal(status.headers.get('cache-control'), 'no-store');
  const body = status.json as StatusBody;
  t.equal(body.mode, 'org');
  t.equal(body.draining, false);
  t.same(body.sessions, { total: 1, by_phase: { pipe: 1 } });
  t.equal(body.pool_mode, 'session', 'the proxy’s pool_mode, the default of orgs');
  t.equal(body.pool.busy, 1);
  t.match(body.pool.keys, [{ role: f.connectAs }]);
  t.match(body.catalog, { orgs: 2, users: 2, connected: true });
  t.same(body.catalog.pool_modes, { session: 2, transaction: 0 }, 'both orgs pooled by session');

  const { rows } = await f.db.query<{ instance: string }>(
    'select instance_id::text as instance from pgvpd.instances() where active',
  );
  t.equal(rows.length, 1, 'the proxy registered once, for its one database');
  t.match(body.instances, [
    {
      server: null,
      database: f.db.name,
      instance: rows[0]?.instance,
      registered_at: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
      lease_until: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
    },
  ]);
  t.equal(body.instances.length, 1, 'and nothing else');
  const [registration] = body.instances;
  t.ok(
    registration !== undefined &&
      Date.parse(registration.lease_until) > Date.parse(registration.registered_at),
    'its lease runs beyond its registration',
  );
  const key = await f.proxy.runtime.org!.instanceKeys.keyFor(f.db.name);
  t.equal(key.instance, registration?.instance, 'the key in use');
  t.notOk(status.text.includes(key.secret.toString('hex')), 'whose secret is not shown');

  await f.db.query(`select pgvpd.org_set_pool_mode($1, 'transaction')`, [f.orgs.beta]);
  t.ok(
    await waitFor(async () => {
      const now = (await f.http('/api/v1/status', { token: operator })).json as StatusBody;
      return now.catalog.pool_modes.transaction === 1;
    }),
    'an org set to transaction pooling is counted so once the catalog reloads',
  );
  const after = (await f.http('/api/v1/status', { token: operator })).json as StatusBody;
  t.same(after.catalog.pool_modes, { session: 1, transaction: 1 });
  t.equal(after.pool_mode, 'session', 'the proxy’s default is unchanged');
});

t.test(
  'a login that is not a member of pgvpd_api is the server’s fault, never the token’s',
  async (t) => {
    const f = await adminFixture(t);
    const token = await f.token('operator');
    await f.db.query(`revoke pgvpd_api from ${f.proxyRole.name}`);
    const answer = await f.http('/api/v1/status', { token });
    t.equal(answer.status, 500);
    t.match(answer.json, {
      error: 'internal',
      message: /^internal error \(request [0-9a-f-]{36}\)$/,
    });
    await f.db.query(`grant pgvpd_api to ${f.proxyRole.name}`);
    t.equal((await f.http('/api/v1/status', { token })).status, 200, 'and 200 once granted');
  },
);
