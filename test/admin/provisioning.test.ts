// Provisioning and org users over HTTP, end to end through an org-mode proxy
// (docs/control-plane.md §2): provision is 201 + Location, 200 created:false for the same spec,
// 409 for another spec, a reserved or a taken name; the name check says why; a user PUT over
// HTTP logs in through the proxy within 2 s and DELETE makes the next login fail with 28P01
// within 2 s; an org token chooses connect_as only from the org's allow-list (403 naming the
// role); verifiers never come back; suspend/resume and remove; validate says active, suspended,
// unknown (404), invalid (400) and is limited per address (429).
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import t from 'tap';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import { sqlstate } from '../support/pgvpd.js';
import { adminFixture, type AdminFixture } from './admin-fixture.js';

/** Retries `attempt` every 100 ms until it resolves or `ms` have passed. */
async function within<T>(ms: number, attempt: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await attempt();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/** Logs in through the proxy and logs out; rejects with the server's error. */
async function login(f: AdminFixture, database: string, user: string, password: string) {
  const client = new pg.Client({ host: '127.0.0.1', port: f.proxy.port, database, user, password });
  client.on('error', () => undefined);
  await client.connect();
  const { rows } = await client.query<{ n: number }>('select count(*)::int as n from public.docs');
  await client.end();
  return rows[0]!.n;
}

t.test('provision: 201 with Location, 200 for the same spec, 409 otherwise', async (t) => {
  const f = await adminFixture(t);
  const operator = await f.token('operator');
  const id = randomUUID();
  const spec = { database_name: 'gamma-db', display_name: 'Gamma' };
  const created = await f.http(`/api/v1/orgs/${id}/provision`, {
    method: 'POST',
    token: operator,
    json: spec,
  });
  t.equal(created.status, 201);
  t.equal(created.headers.get('location'), `/api/v1/orgs/${id}`);
  t.same(created.json, {
    id,
    database_name: 'gamma-db',
    status: 'active',
    placement: 'shared',
    created: true,
  });
  const again = await f.http(`/api/v1/orgs/${id}/provision`, {
    method: 'POST',
    token: operator,
    json: spec,
  });
  t.equal(again.status, 200);
  t.equal(again.headers.get('location'), null);
  t.match(again.json, { id, created: false });
  const other = await f.http(`/api/v1/orgs/${id}/provision`, {
    method: 'POST',
    token: operator,
    json: { database_name: 'delta-db' },
  });
  t.equal(other.status, 409, 'another spec for the id');
  t.match(other.json, { error: 'conflict' });
  const cases = {
    reserved: { name: 'postgres', status: 409 },
    taken: { name: 'acme-analytics', status: 409 },
    invalid: { name: 'Not A Name', status: 400 },
  };
  for (const [kind, { name, status }] of Object.entries(cases)) {
    const answer = await f.http(`/api/v1/orgs/${randomUUID()}/provision`, {
      method: 'POST',
      token: operator,
      json: { database_name: name },
    });
    t.equal(answer.status, status, `${kind} name: ${String(status)}`);
    const check = await f.http(`/api/v1/database-names/${encodeURIComponent(name)}`, {
      token: operator,
    });
    t.same(check.json, { name, available: false, reason: kind }, `the check says ${kind}`);
  }
  const free = await f.http('/api/v1/database-names/epsilon-db', { token: operator });
  t.same(free.json, { name: 'epsilon-db', available: true });
  const badId = await f.http('/api/v1/orgs/not-a-uuid/provision', {
    method: 'POST',
    token: operator,
    json: {},
  });
  t.equal(badId.status, 400, 'an id that is not a uuid');
});

t.test('a provisioned org and its users, over HTTP, end to end', async (t) => {
  const f = await adminFixture(t);
  const operator = await f.token('operator');
  const id = randomUUID();
  const provisioned = await f.http(`/api/v1/orgs/${id}/provision`, {
    method: 'POST',
    token: operator,
    json: { database_name: 'gamma-db' },
  });
  t.equal(provisioned.status, 201);
  await f.db.query('insert into public.docs (org_id, body) values ($1, $2)', [id, 'g1']);

  const put = await f.http(`/api/v1/orgs/${id}/users/grace`, {
    method: 'PUT',
    token: operator,
    json: { verifier: makeVerifier('grace-password-1'), connect_as: f.connectAs },
  });
  t.equal(put.status, 201);
  t.same(put.json, { username: 'grace', created: true });
  t.equal(
    await within(2000, () => login(f, 'gamma-db', 'grace', 'grace-password-1')),
    1,
    'grace logs in within 2 s and sees her org’s row',
  );
  const update = await f.http(`/api/v1/orgs/${id}/users/grace`, {
    method: 'PUT',
    token: operator,
    json: { verifier: makeVerifier('grace-password-2') },
  });
  t.equal(update.status, 200);
  t.same(update.json, { username: 'grace', created: false });
  await within(2000, () => login(f, 'gamma-db', 'grace', 'grace-password-2'));

  const list = await f.http(`/api/v1/orgs/${id}/users`, { token: operator });
  t.equal(list.status, 200);
  t.match(list.json, [{ username: 'grace', connect_as: f.connectAs, created_at: String }]);
  const one = await f.http(`/api/v1/orgs/${id}/users/grace`, { token: operator });
  t.same(Object.keys(one.json as object).sort(), ['connect_as', 'created_at', 'username']);
  for (const answer of [put, update, list, one]) {
    t.notOk(answer.text.includes('SCRAM-SHA-256'), 'no verifier comes back');
  }

  const removed = await f.http(`/api/v1/orgs/${id}/users/grace`, {
    method: 'DELETE',
    token: operator,
  });
  t.equal(removed.status, 204);
  await within(2000, async () => {
    const code = await sqlstate(login(f, 'gamma-db', 'grace', 'grace-password-2'));
    if (code !== '28P01') throw new Error(`still ${code}`);
  });
  t.pass('after DELETE grace is refused with 28P01 within 2 s');
  const gone = await f.http(`/api/v1/orgs/${id}/users/grace`, { token: operator });
  t.equal(gone.status, 404);
  t.match(gone.json, { error: 'not_found' });

  const suspended = await f.http(`/api/v1/orgs/${id}/suspend`, { method: 'POST', token: operator });
  t.same(suspended.json, { status: 'suspended', changed: true });
  const resumed = await f.http(`/api/v1/orgs/${id}/resume`, { method: 'POST', token: operator });
  t.same(resumed.json, { status: 'active', changed: true });
  const deleted = await f.http(`/api/v1/orgs/${id}`, { method: 'DELETE', token: operator });
  t.equal(deleted.status, 204);
  const after = await f.http(`/api/v1/orgs/${id}`, { token: operator });
  t.equal(after.status, 404);
});

t.test('an org token chooses connect_as only from its org’s allow-list', async (t) => {
  const f = await adminFixture(t);
  const operator = await f.token('operator');
  const acme = await f.token('org', f.orgs.acme);
  const body = { verifier: makeVerifier('heidi-password'), connect_as: f.connectAs };
  const refused = await f.http(`/api/v1/orgs/${f.orgs.acme}/users/heidi`, {
    method: 'PUT',
    token: acme,
    json: body,
  });
  t.equal(refused.status, 403);
  t.match(refused.json, { error: 'forbidden', message: new RegExp(f.connectAs) });
  const invite = await f.http(`/api/v1/orgs/${f.orgs.acme}/invites`, {
    method: 'POST',
    token: acme,
    json: { username: 'heidi', connect_as: f.connectAs },
  });
  t.equal(invite.status, 403, 'nor for an invite');
  t.match(invite.json, { error: 'forbidden', message: new RegExp(f.connectAs) });
  const allow = await f.http(`/api/v1/orgs/${f.orgs.acme}/connect-as/${f.connectAs}`, {
    method: 'PUT',
    token: operator,
  });
  t.equal(allow.status, 204);
  const accepted = await f.http(`/api/v1/orgs/${f.orgs.acme}/users/heidi`, {
    method: 'PUT',
    token: acme,
    json: body,
  });
  t.equal(accepted.status, 201, 'once allowed');
  await within(2000, () => login(f, 'acme-analytics', 'heidi', 'heidi-password'));
  const disallow = await f.http(`/api/v1/orgs/${f.orgs.acme}/connect-as/${f.connectAs}`, {
    method: 'DELETE',
    token: operator,
  });
  t.equal(disallow.status, 204);
  const again = await f.http(`/api/v1/orgs/${f.orgs.acme}/users/ivan`, {
    method: 'PUT',
    token: acme,
    json: body,
  });
  t.equal(again.status, 403, 'and refused again once disallowed');
});

t.test('validate: active, suspended, unknown, invalid, then rate-limited', async (t) => {
  const f = await adminFixture(t, { rate_limit_public: 5 });
  await f.db.query('select pgvpd.org_suspend($1)', [f.orgs.beta]);
  const active = await f.http('/api/v1/validate/acme-analytics');
  t.equal(active.status, 200);
  t.equal(active.text, '{"database_name":"acme-analytics","active":true}');
  t.equal(active.headers.get('cache-control'), 'no-store');
  const suspended = await f.http('/api/v1/validate/beta-db');
  t.equal(suspended.text, '{"database_name":"beta-db","active":false}');
  const unknown = await f.http('/api/v1/validate/no-such-db');
  t.equal(unknown.status, 404);
  t.equal(unknown.text, '{"error":"not_found","message":"no such organization"}');
  const invalid = await f.http('/api/v1/validate/Not%20Valid');
  t.equal(invalid.status, 400);
  t.match(invalid.json, { error: 'invalid' });
  const fifth = await f.http('/api/v1/validate/acme-analytics');
  t.equal(fifth.status, 200, 'the fifth in a minute is answered');
  const sixth = await f.http('/api/v1/validate/acme-analytics');
  t.equal(sixth.status, 429, 'the sixth is refused');
  t.match(sixth.headers.get('retry-after'), /^[1-9][0-9]*$/);
  t.equal(sixth.headers.get('cache-control'), 'no-store');
  t.match(sixth.json, { error: 'too_many_requests' });
});

t.test('connect_as is required for an invite and for a new user: 400, never 500', async (t) => {
  const f = await adminFixture(t, { rate_limit_api: 1000 });
  const operator = await f.token('operator');
  const invite = await f.http(`/api/v1/orgs/${f.orgs.acme}/invites`, {
    method: 'POST',
    token: operator,
    json: { username: 'ivan' },
  });
  t.equal(invite.status, 400, 'an invite without connect_as');
  t.equal(
    invite.text,
    `{"error":"invalid","message":"body must have required property 'connect_as'"}`,
  );
  const user = await f.http(`/api/v1/orgs/${f.orgs.acme}/users/judy`, {
    method: 'PUT',
    token: operator,
    json: { verifier: makeVerifier('judy-password') },
  });
  t.equal(user.status, 400, 'a new user without connect_as');
  t.equal(
    user.text,
    `{"error":"invalid","message":"pgvpd: new user 'judy' needs a connect_as role"}`,
  );
  const { rows } = await f.db.query(
    `select 1 from pgvpd.invites($1) where username = 'ivan'
     union all select 1 from pgvpd.org_users($1) where username = 'judy'`,
    [f.orgs.acme],
  );
  t.equal(rows.length, 0, 'neither was made');
});
