// Invites over HTTP, the whole story as curl would tell it (docs/control-plane.md §2): an org's
// admin creates one (201 with a setup link whose fragment carries it), the invitee's page asks
// /info, a verifier SQL refuses (fewer than 4096 iterations) is 400 and leaves the invite open,
// redeem adds the user (who logs in through the proxy at once) and answers the psql line; then
// the invite is dead and /info and /redeem give one 410 body for every kind of dead invite
// (unknown, malformed, one holding a NUL, expired, revoked, consumed). Invites never travel in a
// URL the server sees (GET with one in the query string is 404), public POSTs take JSON only
// (415), 50 concurrent redeems give exactly one 200 (three rounds), and /api/v1/invites/*
// together are limited to rate_limit_invites a minute per client address.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import pg from 'pg';
import t from 'tap';
import { connectInfo } from '../../proxy/admin/connect-info.js';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import { adminFixture, type AdminFixture } from './admin-fixture.js';

const gone = '{"error":"gone","message":"this invite cannot be used"}';

interface Created {
  id: string;
  invite: string;
  setup_url: string;
  expires_at: string;
}

async function invite(f: AdminFixture, token: string, username: string): Promise<Created> {
  const answer = await f.http(`/api/v1/orgs/${f.orgs.acme}/invites`, {
    method: 'POST',
    token,
    json: { username, connect_as: f.connectAs },
  });
  if (answer.status !== 201) throw new Error(`invite: ${String(answer.status)} ${answer.text}`);
  return answer.json as Created;
}

/** A pg client through the proxy, retried until it logs in or `ms` have passed. */
async function loginWithin(
  f: AdminFixture,
  user: string,
  password: string,
  ms: number,
): Promise<pg.Client> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await f.connect('acme-analytics', user, password);
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

t.test('the invite story: create, info, a weak verifier, redeem, log in, dead', async (t) => {
  const f = await adminFixture(t, { rate_limit_invites: 1000 });
  const operator = await f.token('operator');
  const created = await invite(f, operator, 'bob');
  t.match(created.invite, /^pgvpd_inv_[0-9a-f]{72}$/);
  t.equal(created.setup_url, `${f.base}/setup#invite=${created.invite}`);
  t.ok(Date.parse(created.expires_at) > Date.now() + 23 * 3600 * 1000, 'valid for 24 h');

  const info = await f.http('/api/v1/invites/info', {
    method: 'POST',
    json: { invite: created.invite },
  });
  t.equal(info.status, 200);
  t.equal(info.headers.get('cache-control'), 'no-store');
  t.same(info.json, {
    org: { database_name: 'acme-analytics', display_name: 'Acme' },
    username: 'bob',
    expires_at: created.expires_at,
    scram_iterations: 4096,
  });

  const weak = await f.http('/api/v1/invites/redeem', {
    method: 'POST',
    json: {
      invite: created.invite,
      verifier: makeVerifier('bob-password-1', { iterations: 1024 }),
    },
  });
  t.equal(weak.status, 400, 'fewer than 4096 iterations');
  t.match(weak.json, { error: 'invalid' });
  const stillOpen = await f.http('/api/v1/invites/info', {
    method: 'POST',
    json: { invite: created.invite },
  });
  t.equal(stillOpen.status, 200, 'the refused verifier left the invite open');

  const redeemed = await f.http('/api/v1/invites/redeem', {
    method: 'POST',
    json: { invite: created.invite, verifier: makeVerifier('bob-password-1') },
  });
  t.equal(redeemed.status, 200);
  const port = f.proxy.port;
  t.same(redeemed.json, {
    org: { database_name: 'acme-analytics', display_name: 'Acme' },
    username: 'bob',
    connection: {
      host: '127.0.0.1',
      port,
      database: 'acme-analytics',
      user: 'bob',
      sslmode: 'prefer',
    },
    psql: `psql 'host=127.0.0.1 port=${String(port)} dbname=acme-analytics user=bob sslmode=prefer'`,
    uri: `postgresql://bob@127.0.0.1:${String(port)}/acme-analytics?sslmode=prefer`,
  });
  const bob = await loginWithin(f, 'bob', 'bob-password-1', 2000);
  const { rows } = await bob.query<{ n: number }>('select count(*)::int as n from public.docs');
  t.equal(rows[0]!.n, 2, 'bob sees acme’s rows');
  const answer = redeemed.json as { psql: string; uri: string };
  const conninfo = /^psql '(.*)'$/.exec(answer.psql)?.[1] ?? '';
  for (const [what, target] of [
    ['the psql line', conninfo],
    ['the URI', answer.uri],
  ] as const) {
    // Asynchronous: the proxy answering psql runs in this process.
    const psql = await promisify(execFile)(
      '/usr/bin/psql',
      ['-X', '-A', '-t', target, '-c', 'select count(*) from public.docs'],
      { env: { ...process.env, PGPASSWORD: 'bob-password-1' }, encoding: 'utf8' },
    );
    t.equal(psql.stdout.trim(), '2', `${what} works with psql through the proxy`);
  }

  for (const path of ['/api/v1/invites/redeem', '/api/v1/invites/info']) {
    const again = await f.http(path, {
      method: 'POST',
      json: { invite: created.invite, verifier: makeVerifier('bob-password-2') },
    });
    t.equal(again.status, 410, `${path} after redeem: 410`);
    t.equal(again.text, gone, `${path} after redeem: the one body`);
  }
  const listed = await f.http(`/api/v1/orgs/${f.orgs.acme}/invites`, { token: operator });
  t.match(listed.json, [{ id: created.id, username: 'bob', state: 'consumed' }]);
  t.notOk(listed.text.includes('pgvpd_inv_'), 'a listing never shows an invite');
});

t.test('the psql line, pasted into bash, is psql and one conninfo word, nothing run', async (t) => {
  const target = { host: '127.0.0.1', port: 6432, sslmode: 'prefer' };
  // Each username, and how libpq reads it inside the conninfo (its own quoting of values).
  const users: Record<string, string> = {
    'a" ; echo INJECTED ; echo "': `'a" ; echo INJECTED ; echo "'`,
    'x$(echo PWNED)': `'x$(echo PWNED)'`,
    'x`echo PWNED`': "'x`echo PWNED`'",
    svc$app: `'svc$app'`,
    "o'brien": String.raw`'o\'brien'`,
  };
  for (const [user, inConninfo] of Object.entries(users)) {
    const { psql } = connectInfo(target, 'acme-analytics', user);
    const conninfo = `host=127.0.0.1 port=6432 dbname=acme-analytics user=${inConninfo} sslmode=prefer`;
    t.ok(psql.startsWith('psql '), `${user}: the line starts with psql`);
    const words = psql.slice('psql '.length);
    const { stdout, stderr } = await promisify(execFile)(
      '/bin/bash',
      ['-c', `set -- ${words}; printf '%s\\n' "$#" "$1"`],
      { encoding: 'utf8' },
    );
    t.equal(stdout, `1\n${conninfo}\n`, `${user}: one argument, exactly the conninfo`);
    t.equal(stderr, '', `${user}: nothing else ran`);
  }
});

t.test(
  'unknown, malformed, NUL-holding, expired, revoked, consumed invites: byte-identical',
  async (t) => {
    const f = await adminFixture(t, { rate_limit_invites: 1000 });
    const operator = await f.token('operator');
    const expired = await invite(f, operator, 'carol');
    await f.db.query(
      `update pgvpd_private.invites set expires_at = now() - interval '1 second' where id = $1`,
      [expired.id],
    );
    const revoked = await invite(f, operator, 'dave');
    const revoke = await f.http(`/api/v1/orgs/${f.orgs.acme}/invites/${revoked.id}`, {
      method: 'DELETE',
      token: operator,
    });
    t.equal(revoke.status, 204);
    t.equal(revoke.text, '');
    const consumed = await invite(f, operator, 'erin');
    const first = await f.http('/api/v1/invites/redeem', {
      method: 'POST',
      json: { invite: consumed.invite, verifier: makeVerifier('erin-password') },
    });
    t.equal(first.status, 200);
    const dead = {
      unknown: `pgvpd_inv_${'ab'.repeat(36)}`,
      malformed: 'pgvpd_inv_not-an-invite',
      empty: '',
      'holding a NUL': 'pgvpd_inv_\u0000',
      expired: expired.invite,
      revoked: revoked.invite,
      consumed: consumed.invite,
    };
    for (const [kind, value] of Object.entries(dead)) {
      for (const path of ['/api/v1/invites/info', '/api/v1/invites/redeem']) {
        const answer = await f.http(path, {
          method: 'POST',
          json: { invite: value, verifier: makeVerifier('any-password') },
        });
        t.equal(answer.status, 410, `${kind} at ${path}: 410`);
        t.equal(answer.text, gone, `${kind} at ${path}: the one body`);
        t.equal(answer.headers.get('cache-control'), 'no-store');
      }
    }
  },
);

t.test('invites never travel in a URL, and public POSTs take JSON only', async (t) => {
  const f = await adminFixture(t, { rate_limit_invites: 1000 });
  const created = await invite(f, await f.token('operator'), 'frank');
  for (const path of ['/api/v1/invites/info', '/api/v1/invites/redeem']) {
    const get = await f.http(`${path}?invite=${created.invite}`);
    t.equal(get.status, 404, `GET ${path}?invite=… is no route`);
    t.equal(get.text, '{"error":"not_found","message":"not found"}');
    const body = JSON.stringify({ invite: created.invite });
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', undefined]) {
      const answer = await f.http(path, {
        method: 'POST',
        body,
        headers: type === undefined ? {} : { 'content-type': type },
      });
      t.equal(answer.status, 415, `${path} as ${String(type)}: 415`);
      t.equal(
        answer.text,
        '{"error":"unsupported_media_type","message":"the body must be application/json"}',
      );
    }
  }
  const info = await f.http('/api/v1/invites/info', {
    method: 'POST',
    json: { invite: created.invite },
  });
  t.equal(info.status, 200, 'the invite is still open after all that');
});

t.test('50 concurrent redeems of one invite: exactly one wins, three times', async (t) => {
  const f = await adminFixture(t, { rate_limit_invites: 1000 });
  const operator = await f.token('operator');
  for (let round = 1; round <= 3; round++) {
    const created = await invite(f, operator, `racer${String(round)}`);
    const answers = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        f.http('/api/v1/invites/redeem', {
          method: 'POST',
          json: { invite: created.invite, verifier: makeVerifier(`racer-password-${String(i)}`) },
        }),
      ),
    );
    const statuses = answers.map((answer) => answer.status);
    t.equal(statuses.filter((s) => s === 200).length, 1, `round ${String(round)}: one 200`);
    t.equal(statuses.filter((s) => s === 410).length, 49, `round ${String(round)}: 49 × 410`);
    const { rows } = await f.db.query<{ n: number }>(
      'select count(*)::int as n from pgvpd_private.org_users where org_id = $1 and username = $2',
      [f.orgs.acme, `racer${String(round)}`],
    );
    t.equal(rows[0]!.n, 1, `round ${String(round)}: one user`);
  }
});

t.test(
  '/api/v1/invites/* together: rate_limit_invites a minute per address, then 429',
  async (t) => {
    const f = await adminFixture(t);
    const answers = [];
    for (let i = 0; i < 11; i++) {
      const path = i % 2 === 0 ? '/api/v1/invites/info' : '/api/v1/invites/redeem';
      answers.push(
        await f.http(path, { method: 'POST', json: { invite: 'x', verifier: makeVerifier('p') } }),
      );
    }
    t.same(
      answers.map((a) => a.status),
      [410, 410, 410, 410, 410, 410, 410, 410, 410, 410, 429],
      'ten answered, the eleventh refused',
    );
    const refused = answers[10]!;
    t.match(refused.headers.get('retry-after'), /^[1-9][0-9]*$/);
    t.equal(refused.headers.get('cache-control'), 'no-store');
    t.match(refused.json, { error: 'too_many_requests' });
    const health = await f.http('/healthz');
    t.equal(health.status, 200, 'other routes are not limited by it');
  },
);
