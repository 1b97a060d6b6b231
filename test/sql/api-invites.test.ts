// Invites of the control plane (migration 000011): the whole story as the setup page lives it
// (info, a bad verifier leaves the invite open, redeem, then gone), every dead invite answered with
// one and the same PV410, ttl bounds, one open invite per (org, username), the allowed-roles rule
// for org tokens, pruning, and exactly one winner among 50 concurrent redeems on separate
// connections.
import { createHash, randomBytes } from 'node:crypto';
import type pg from 'pg';
import t, { type Test } from 'tap';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import { createTestDatabase } from '../support/postgres.js';
import { connect, installPgvpd, loginRole, scratchRole } from '../support/pgvpd.js';

const db = await createTestDatabase(t);
await installPgvpd(db);
const admin = await (await loginRole(t, db, 'admin')).connect();
t.teardown(() => admin.end());
const apiLogin = await scratchRole(t, db, 'inherit in role pgvpd_api');
const api = await connect(apiLogin.url);
t.teardown(() => api.end());

interface Refusal {
  code: string;
  message: string;
  hint?: string;
  detail?: string;
  severity?: string;
}

/** Every field a client reads of a failed query, or code 'no error'. */
async function refusal(promise: Promise<unknown>): Promise<Refusal> {
  try {
    await promise;
    return { code: 'no error', message: '' };
  } catch (error) {
    const { code, message, hint, detail, severity } = error as Refusal;
    return { code, message, hint, detail, severity };
  }
}

const gone: Refusal = {
  code: 'PV410',
  message: 'pgvpd: invite is not valid',
  hint: undefined,
  detail: undefined,
  severity: 'ERROR',
};

async function one<R extends pg.QueryResultRow>(
  client: pg.Client,
  sql: string,
  params: unknown[] = [],
): Promise<R> {
  return (await client.query<R>(sql, params)).rows[0]!;
}

/** A connect_as role: LOGIN, nothing else; dropped at teardown. */
async function customerRole(t: Test): Promise<string> {
  return (await scratchRole(t, db, 'nosuperuser nobypassrls')).name;
}

async function newOrg(): Promise<{ id: string; name: string }> {
  const name = `inv-${randomBytes(4).toString('hex')}`;
  const { id } = await one<{ id: string }>(admin, 'select pgvpd.org_create($1, $1) as id', [name]);
  return { id, name };
}

async function invite(
  org: string,
  username: string,
  role: string,
  ttl = '24 hours',
): Promise<{ id: string; invite: string; expires_at: Date }> {
  return one(admin, 'select * from pgvpd.invite_create($1, $2, $3, $4::interval)', [
    org,
    username,
    role,
    ttl,
  ]);
}

const info = (inv: string | null) => api.query('select * from pgvpd.invite_info($1)', [inv]);
const redeem = (inv: string | null, verifier: string | null) =>
  api.query('select * from pgvpd.invite_redeem($1, $2)', [inv, verifier]);

async function stateOf(org: string, id: string): Promise<string> {
  return (await one<{ state: string }>(admin, 'select state from pgvpd.invites($1) where id = $2', [org, id]))
    .state;
}

t.test('the whole story: info, a bad verifier leaves it open, redeem, then gone', async (t) => {
  const role = await customerRole(t);
  const org = await newOrg();
  const operator = (await one<{ token: string }>(admin, `select token from pgvpd.token_create('operator')`))
    .token;
  const created = await one<{ id: string; invite: string; expires_at: Date }>(
    api,
    'select * from pgvpd.api_invite_create($1, $2, $3, $4, null)',
    [operator, org.id, 'alice', role],
  );
  t.match(created.invite, /^pgvpd_inv_[0-9a-f]{72}$/, 'an invite is pgvpd_inv_ and 72 hex characters');
  const body = created.invite.slice(10, 74);
  t.equal(
    created.invite.slice(74),
    createHash('sha256').update(`pgvpd_inv_${body}`).digest('hex').slice(0, 8),
    'its checksum is sha256(prefix || body), first 8 hex',
  );
  const ttlHours = (created.expires_at.getTime() - Date.now()) / 3_600_000;
  t.ok(ttlHours > 23.9 && ttlHours <= 24, 'a NULL ttl over the API means 24 hours');

  t.same((await info(created.invite)).rows, [
    { database_name: org.name, display_name: org.name, username: 'alice', expires_at: created.expires_at },
  ]);

  t.same(await refusal(redeem(created.invite, 'hunter2')), {
    code: '22023',
    message: 'pgvpd: verifier is not a SCRAM-SHA-256 verifier',
    hint: "the format is PostgreSQL's: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, in base64",
    detail: undefined,
    severity: 'ERROR',
  }, 'a password instead of a verifier is refused');
  t.same(await refusal(redeem(created.invite, makeVerifier('pw', { iterations: 4095 }))), {
    code: '22023',
    message: 'pgvpd: verifier has fewer than 4096 iterations',
    hint: 'compute it with at least 4096 iterations of PBKDF2, as PostgreSQL does',
    detail: undefined,
    severity: 'ERROR',
  }, 'a verifier of 4095 iterations is refused');
  t.equal(await stateOf(org.id, created.id), 'open', 'the invite is still open');
  t.equal((await info(created.invite)).rows.length, 1, 'and info still answers');

  const verifier = makeVerifier('correct horse');
  t.same((await redeem(created.invite, verifier)).rows, [{ database_name: org.name, username: 'alice' }]);
  const { rows: users } = await db.query(
    'select username, scram_verifier, connect_as from pgvpd_private.org_users where org_id = $1',
    [org.id],
  );
  t.same(users, [{ username: 'alice', scram_verifier: verifier, connect_as: role }], 'the user is added with that verifier');
  t.equal(await stateOf(org.id, created.id), 'consumed');

  t.same(await refusal(redeem(created.invite, makeVerifier('again'))), gone, 'a second redeem is gone');
  t.same(await refusal(info(created.invite)), gone, 'and so is info');
});

t.test('redeeming tells the proxies: one NOTIFY pgvpd_catalog, empty as every catalog change', async (t) => {
  const role = await customerRole(t);
  const org = await newOrg();
  const { invite: inv } = await invite(org.id, 'bob', role);
  const listener = await connect(db.url);
  t.teardown(() => listener.end());
  const heard: string[] = [];
  listener.on('notification', (n) => {
    if (n.channel === 'pgvpd_catalog') heard.push(n.payload ?? '');
  });
  await listener.query('listen pgvpd_catalog');
  await redeem(inv, makeVerifier('pw'));
  await listener.query('select 1'); // a notification arrives before the answer to a later query
  t.same(heard, [''], 'the proxies reload their snapshot on it');
});

t.test('every dead invite gets the same PV410 from info and from redeem', async (t) => {
  const role = await customerRole(t);
  const org = await newOrg();
  const suspended = await newOrg();
  const verifier = makeVerifier('pw');

  const expired = await invite(org.id, 'expired', role);
  await db.query(
    `update pgvpd_private.invites set expires_at = clock_timestamp() - interval '1 second' where id = $1`,
    [expired.id],
  );
  const revoked = await invite(org.id, 'revoked', role);
  await admin.query('select pgvpd.invite_revoke($1, $2)', [org.id, revoked.id]);
  const consumed = await invite(org.id, 'consumed', role);
  await redeem(consumed.invite, verifier);
  const replaced = await invite(org.id, 'replaced', role);
  await invite(org.id, 'replaced', role);
  const ofSuspended = await invite(suspended.id, 'carol', role);
  await admin.query('select pgvpd.org_suspend($1)', [suspended.id]);
  const open = await invite(org.id, 'open', role);
  const body = randomBytes(32).toString('hex');
  const neverIssued =
    `pgvpd_inv_${body}` + createHash('sha256').update(`pgvpd_inv_${body}`).digest('hex').slice(0, 8);
  const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === 'a' ? 'b' : 'a') + s.slice(i + 1);
  const token = (await one<{ token: string }>(admin, `select token from pgvpd.token_create('metrics')`)).token;

  const dead: Record<string, string | null> = {
    'never issued': neverIssued,
    expired: expired.invite,
    revoked: revoked.invite,
    consumed: consumed.invite,
    'replaced by a newer invite': replaced.invite,
    'of a suspended org': ofSuspended.invite,
    'a checksum character changed': flip(open.invite, 78),
    'a body character changed': flip(open.invite, 30),
    'in upper case': open.invite.toUpperCase(),
    'an API token': token,
    'without its prefix': open.invite.slice(10),
    'cut short': open.invite.slice(0, 40),
    garbage: "'; select 1; --",
    empty: '',
    null: null,
  };
  for (const [what, value] of Object.entries(dead)) {
    t.same(await refusal(info(value)), gone, `info: ${what}`);
    t.same(await refusal(redeem(value, verifier)), gone, `redeem: ${what}`);
  }
  t.equal((await info(open.invite)).rows.length, 1, 'the open invite they were made from still works');
  await admin.query('select pgvpd.org_resume($1)', [suspended.id]);
  t.equal((await info(ofSuspended.invite)).rows.length, 1, 'an org resumed, its invite works again');
});

t.test('an invite lives 24 hours by default, more than nothing and at most 7 days', async (t) => {
  const role = await customerRole(t);
  const org = await newOrg();
  const ttlRefusal = {
    code: '22023',
    message: 'pgvpd: invite ttl must be more than 0 and at most 7 days',
    hint: undefined,
    detail: undefined,
    severity: 'ERROR',
  };
  for (const ttl of ['0', '-1 hour', '7 days 1 second', '1 month', null]) {
    t.same(
      await refusal(
        admin.query('select * from pgvpd.invite_create($1, $2, $3, $4::interval)', [org.id, 'u', role, ttl]),
      ),
      ttlRefusal,
      `ttl ${String(ttl)}`,
    );
  }
  const week = await invite(org.id, 'week', role, '7 days');
  const { created_at: createdAt } = await one<{ created_at: Date }>(
    admin,
    'select created_at from pgvpd.invites($1) where id = $2',
    [org.id, week.id],
  );
  t.equal(week.expires_at.getTime() - createdAt.getTime(), 7 * 86_400_000, 'exactly 7 days is allowed');
  const byDefault = await one<{ id: string; expires_at: Date }>(
    admin,
    'select id, expires_at from pgvpd.invite_create($1, $2, $3)',
    [org.id, 'default', role],
  );
  const { created_at: defaultCreated } = await one<{ created_at: Date }>(
    admin,
    'select created_at from pgvpd.invites($1) where id = $2',
    [org.id, byDefault.id],
  );
  t.equal(byDefault.expires_at.getTime() - defaultCreated.getTime(), 86_400_000, 'the default is 24 hours');
  const operator = (await one<{ token: string }>(admin, `select token from pgvpd.token_create('operator')`))
    .token;
  t.same(
    await refusal(
      api.query(`select * from pgvpd.api_invite_create($1, $2, 'api', $3, interval '8 days')`, [
        operator,
        org.id,
        role,
      ]),
    ),
    ttlRefusal,
    'the API keeps the same bounds',
  );
});

t.test('a new invite for a username revokes the open one', async (t) => {
  const role = await customerRole(t);
  const org = await newOrg();
  const first = await invite(org.id, 'dave', role);
  const second = await invite(org.id, 'dave', role);
  t.same(await refusal(info(first.invite)), gone, 'the first is gone');
  t.equal((await info(second.invite)).rows.length, 1, 'the second is open');
  const { rows } = await admin.query('select id, username, state from pgvpd.invites($1)', [org.id]);
  t.same(rows, [
    { id: first.id, username: 'dave', state: 'revoked' },
    { id: second.id, username: 'dave', state: 'open' },
  ]);
  const other = await invite(org.id, 'erin', role);
  t.equal((await info(second.invite)).rows.length, 1, 'an invite for another username changes nothing');
  t.equal((await info(other.invite)).rows.length, 1);
});

t.test('ten concurrent invites for one username: all made, one left open', async (t) => {
  const role = await customerRole(t);
  const org = await newOrg();
  const operator = (await one<{ token: string }>(admin, `select token from pgvpd.token_create('operator')`))
    .token;
  const clients = await Promise.all(Array.from({ length: 10 }, () => connect(apiLogin.url)));
  t.teardown(() => Promise.all(clients.map((c) => c.end())));
  const outcomes = await Promise.all(
    clients.map((c) =>
      refusal(
        c.query('select * from pgvpd.api_invite_create($1, $2, $3, $4)', [operator, org.id, 'quinn', role]),
      ),
    ),
  );
  t.same(
    outcomes.map((o) => o.code),
    Array.from({ length: 10 }, () => 'no error'),
  );
  const { rows } = await admin.query<{ state: string; n: number }>(
    'select state, count(*)::int as n from pgvpd.invites($1) group by state order by state',
    [org.id],
  );
  t.same(rows, [
    { state: 'open', n: 1 },
    { state: 'revoked', n: 9 },
  ]);
});

t.test('invite_create refuses a bad username, a bad role, a missing org or an existing user', async (t) => {
  const role = await customerRole(t);
  const org = await newOrg();
  const missing = '00000000-0000-4000-8000-00000000beef';
  await admin.query('select pgvpd.user_add($1, $2, $3, $4)', [org.id, 'frank', makeVerifier('pw'), role]);
  const create = (o: string, u: string, r: string) =>
    refusal(admin.query('select * from pgvpd.invite_create($1, $2, $3)', [o, u, r]));
  t.same(await create(org.id, 'a\tb', role), {
    code: '22023',
    message: 'pgvpd: username must be 1 to 63 characters without control characters',
    hint: undefined,
    detail: undefined,
    severity: 'ERROR',
  });
  t.same((await create(org.id, 'u', 'no_such_role_here')).message, 'pgvpd: connect_as role no_such_role_here does not exist');
  const bypass = (await scratchRole(t, db, 'bypassrls')).name;
  t.same((await create(org.id, 'u', bypass)).message, `pgvpd: connect_as role ${bypass} has BYPASSRLS`);
  t.same(await create(missing, 'u', role), {
    code: '42704',
    message: `pgvpd: no org '${missing}'`,
    hint: undefined,
    detail: undefined,
    severity: 'ERROR',
  });
  t.same(await create(org.id, 'frank', role), {
    code: '23505',
    message: `pgvpd: user 'frank' already exists in org '${org.id}'`,
    hint: undefined,
    detail: undefined,
    severity: 'ERROR',
  });
});

t.test('a user added meanwhile makes redeem fail and leaves the invite open', async (t) => {
  const role = await customerRole(t);
  const org = await newOrg();
  const created = await invite(org.id, 'gina', role);
  await admin.query('select pgvpd.user_add($1, $2, $3, $4)', [org.id, 'gina', makeVerifier('first'), role]);
  t.same((await refusal(redeem(created.invite, makeVerifier('second')))).code, '23505');
  t.equal(await stateOf(org.id, created.id), 'open', 'the consumption rolled back with the failure');
  const { rows } = await db.query<{ ok: boolean }>(
    `select count(*) = 1 as ok from pgvpd_private.org_users where org_id = $1 and username = 'gina'`,
    [org.id],
  );
  t.same(rows, [{ ok: true }], 'the existing user is untouched');
});

t.test('an org token invites with its allowed roles only; the message names the role', async (t) => {
  const allowed = await customerRole(t);
  const other = await customerRole(t);
  const org = await newOrg();
  const otherOrg = await newOrg();
  await admin.query('select pgvpd.org_allow_role($1, $2)', [org.id, allowed]);
  const orgToken = (await one<{ token: string }>(admin, `select token from pgvpd.token_create('org', $1)`, [org.id]))
    .token;
  const create = (o: string, role: string) =>
    api.query('select * from pgvpd.api_invite_create($1, $2, $3, $4)', [orgToken, o, 'henry', role]);
  t.same(await refusal(create(org.id, other)), {
    code: '42501',
    message: `pgvpd: connect_as role ${other} is not allowed for this org`,
    hint: 'an operator allows it: pgvpd org allow-role <org> <role>',
    detail: undefined,
    severity: 'ERROR',
  });
  t.equal((await create(org.id, allowed)).rows.length, 1, 'an allowed role is accepted');
  t.same(await refusal(create(otherOrg.id, allowed)), {
    code: '42501',
    message: 'pgvpd: token not allowed here',
    hint: undefined,
    detail: undefined,
    severity: 'ERROR',
  }, 'another org is refused before anything else');
  const operator = (await one<{ token: string }>(admin, `select token from pgvpd.token_create('operator')`))
    .token;
  t.equal(
    (await api.query('select * from pgvpd.api_invite_create($1, $2, $3, $4)', [operator, org.id, 'ivy', other])).rows
      .length,
    1,
    'an operator token may use any role check_connect_as accepts',
  );
});

t.test('invites list, revoke and prune', async (t) => {
  const role = await customerRole(t);
  const org = await newOrg();
  const orgToken = (await one<{ token: string }>(admin, `select token from pgvpd.token_create('org', $1)`, [org.id]))
    .token;
  const otherToken = (
    await one<{ token: string }>(admin, `select token from pgvpd.token_create('org', $1)`, [(await newOrg()).id])
  ).token;
  const a = await invite(org.id, 'a', role);
  const b = await invite(org.id, 'b', role);
  const listed = await api.query('select * from pgvpd.api_invites($1, $2)', [orgToken, org.id]);
  t.same(listed.fields.map((f) => f.name), ['id', 'username', 'connect_as', 'state', 'created_at', 'expires_at']);
  t.same(
    listed.rows.map((r: { id: string; state: string }) => [r.id, r.state]),
    [
      [a.id, 'open'],
      [b.id, 'open'],
    ],
  );
  t.same(
    await refusal(api.query('select pgvpd.api_invite_revoke($1, $2, $3)', [otherToken, org.id, a.id])),
    { code: '42501', message: 'pgvpd: token not allowed here', hint: undefined, detail: undefined, severity: 'ERROR' },
    'another org token may not revoke it',
  );
  await api.query('select pgvpd.api_invite_revoke($1, $2, $3)', [orgToken, org.id, a.id]);
  t.same(await refusal(info(a.invite)), gone, 'revoked over the API');
  t.equal(
    (await one<{ r: boolean }>(admin, 'select pgvpd.invite_revoke($1, $2) as r', [org.id, a.id])).r,
    false,
    'revoking again changes nothing',
  );
  const missing = '00000000-0000-4000-8000-00000000beef';
  t.same(await refusal(api.query('select pgvpd.api_invite_revoke($1, $2, $3)', [orgToken, org.id, missing])), {
    code: '42704',
    message: `pgvpd: no invite '${missing}' in org '${org.id}'`,
    hint: undefined,
    detail: undefined,
    severity: 'ERROR',
  });

  // Ended long ago: consumed, revoked, expired; and one of each ended recently, and one open.
  const old = [await invite(org.id, 'c', role), await invite(org.id, 'd', role), await invite(org.id, 'e', role)];
  await redeem(old[0]!.invite, makeVerifier('pw'));
  await admin.query('select pgvpd.invite_revoke($1, $2)', [org.id, old[1]!.id]);
  await db.query(
    `update pgvpd_private.invites set created_at = created_at - interval '40 days',
        expires_at = expires_at - interval '40 days', consumed_at = consumed_at - interval '40 days',
        revoked_at = revoked_at - interval '40 days'
      where id = any($1)`,
    [old.map((i) => i.id)],
  );
  t.equal((await one<{ n: number }>(admin, 'select pgvpd.prune_invites() as n')).n, 3, 'three ended 30+ days ago');
  const left = await admin.query<{ username: string; state: string }>(
    'select username, state from pgvpd.invites($1) order by username',
    [org.id],
  );
  t.same(left.rows, [
    { username: 'a', state: 'revoked' },
    { username: 'b', state: 'open' },
  ]);
  const ended = await db.query<{ n: number }>(
    `select count(*)::int as n from pgvpd_private.invites
      where consumed_at is not null or revoked_at is not null or expires_at <= clock_timestamp()`,
  );
  t.equal(
    (await one<{ n: number }>(admin, `select pgvpd.prune_invites('0') as n`)).n,
    ended.rows[0]!.n,
    'with 0: every ended invite, of every org',
  );
  t.same(
    (await admin.query('select username, state from pgvpd.invites($1)', [org.id])).rows,
    [{ username: 'b', state: 'open' }],
    'the open one stays',
  );
  t.same(await refusal(admin.query(`select pgvpd.prune_invites('-1 day')`)), {
    code: '22023',
    message: 'pgvpd: prune_invites needs an interval of 0 or more',
    hint: undefined,
    detail: undefined,
    severity: 'ERROR',
  });
});

t.test('50 concurrent redeems of one invite: exactly one wins, 49 get PV410, three times', async (t) => {
  const role = await customerRole(t);
  const org = await newOrg();
  const clients = await Promise.all(Array.from({ length: 50 }, () => connect(apiLogin.url)));
  t.teardown(() => Promise.all(clients.map((c) => c.end())));
  const verifier = makeVerifier('race');
  for (let round = 1; round <= 3; round += 1) {
    const username = `racer-${String(round)}`;
    const { id, invite: inv } = await invite(org.id, username, role);
    const outcomes = await Promise.all(
      clients.map((c) => refusal(c.query('select * from pgvpd.invite_redeem($1, $2)', [inv, verifier]))),
    );
    const winners = outcomes.filter((o) => o.code === 'no error').length;
    const losers = outcomes.filter((o) => o.code === gone.code && o.message === gone.message).length;
    t.same([winners, losers], [1, 49], `round ${String(round)}`);
    t.equal(await stateOf(org.id, id), 'consumed');
    const { rows } = await db.query(`select count(*)::int as n from pgvpd_private.org_users where org_id = $1 and username = $2`, [
      org.id,
      username,
    ]);
    t.same(rows, [{ n: 1 }], 'one user added');
  }
});
