// Orgs and org users through the control plane's functions (migration 000011): provisioning by a
// caller-chosen id (idempotent for the same spec, 23505 for another), name checks with their
// reason, status, removal, users put/get/remove without verifiers ever coming back, the per-org
// connect_as allow-list for org tokens, and the public org_validate.
import { randomBytes, randomUUID } from 'node:crypto';
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
}

/** The SQLSTATE, message and hint of a failed query, or code 'no error'. */
async function refusal(promise: Promise<unknown>): Promise<Refusal> {
  try {
    await promise;
    return { code: 'no error', message: '' };
  } catch (error) {
    const { code, message, hint } = error as Refusal;
    return { code, message, hint };
  }
}

const notAllowed = { code: '42501', message: 'pgvpd: token not allowed here', hint: undefined };

async function one<R extends pg.QueryResultRow>(
  client: pg.Client,
  sql: string,
  params: unknown[] = [],
): Promise<R> {
  return (await client.query<R>(sql, params)).rows[0]!;
}

async function token(scope: string, org: string | null = null): Promise<string> {
  return (
    await one<{ token: string }>(admin, 'select token from pgvpd.token_create($1, $2)', [
      scope,
      org,
    ])
  ).token;
}

function newId(): string {
  return randomUUID();
}

async function newOrg(): Promise<{ id: string; name: string }> {
  const name = `org-${randomBytes(4).toString('hex')}`;
  const { id } = await one<{ id: string }>(admin, 'select pgvpd.org_create($1, $1) as id', [name]);
  return { id, name };
}

/** A connect_as role (LOGIN, nothing more), dropped at teardown. */
async function customerRole(t: Test): Promise<string> {
  return (await scratchRole(t, db, 'nosuperuser nobypassrls')).name;
}

const operator = await token('operator');
const provision = (
  tok: string,
  id: string,
  name: string | null = null,
  display: string | null = null,
  placement: string | null = null,
  server: string | null = null,
  target: string | null = null,
) =>
  api.query('select * from pgvpd.api_org_provision($1, $2, $3, $4, $5, $6, $7)', [
    tok,
    id,
    name,
    display,
    placement,
    server,
    target,
  ]);

t.test('provisioning by id: created, the same spec again, another spec', async (t) => {
  const id = newId();
  const name = `acme-${randomBytes(3).toString('hex')}`;
  const first = await provision(operator, id, name, 'Acme');
  t.same(first.rows, [{ id, database_name: name, status: 'active', placement: 'shared', created: true }]);
  t.same(
    (await provision(operator, id, name, 'Acme', 'shared', 'default', db.name)).rows,
    [{ id, database_name: name, status: 'active', placement: 'shared', created: false }],
    'the same spec, defaults spelled out, is the same org',
  );
  t.same((await provision(operator, id, name, 'Acme')).rows[0]!.created, false, 'and again');
  for (const [what, args] of [
    ['another name', [`other-${randomBytes(3).toString('hex')}`, 'Acme']],
    ['another display name', [name, 'Acme Inc']],
    ['no display name', [name, null]],
    ['another target database', [name, 'Acme', 'shared', 'default', 'postgres']],
  ] as const) {
    t.same(
      await refusal(provision(operator, id, ...(args as [string, string | null]))),
      {
        code: '23505',
        message: `pgvpd: org '${id}' already exists with another spec`,
        hint: 'provisioning an org again succeeds only with the same database name, display name, placement, server and target database',
      },
      what,
    );
  }
  await admin.query('select pgvpd.org_suspend($1)', [id]);
  t.same(
    (await provision(operator, id, name, 'Acme')).rows,
    [{ id, database_name: name, status: 'suspended', placement: 'shared', created: false }],
    'a suspended org provisioned again stays suspended',
  );
});

t.test('ten concurrent provisions of one id: one creates it, nine find it', async (t) => {
  const clients = await Promise.all(Array.from({ length: 10 }, () => connect(apiLogin.url)));
  t.teardown(() => Promise.all(clients.map((c) => c.end())));
  const id = newId();
  const name = `race-${randomBytes(3).toString('hex')}`;
  const created = await Promise.all(
    clients.map(async (c) => {
      const { rows } = await c.query<{ created: boolean }>(
        'select created from pgvpd.api_org_provision($1, $2, $3, $4)',
        [operator, id, name, 'Race'],
      );
      return rows[0]!.created;
    }),
  );
  t.same(
    [created.filter((c) => c).length, created.filter((c) => !c).length],
    [1, 9],
  );
});

t.test('without a database name the org is named by its id', async (t) => {
  const id = newId();
  t.same((await provision(operator, id)).rows, [
    { id, database_name: id, status: 'active', placement: 'shared', created: true },
  ]);
  t.same((await provision(operator, id, id)).rows[0]!.created, false, 'naming it by its id is the same spec');
  const row = await one(admin, 'select display_name, server_name, target_database from pgvpd.orgs() where id = $1', [id]);
  t.same(row, { display_name: null, server_name: 'default', target_database: db.name });
});

t.test("provisioning refuses what org_create refuses, and a dedicated org without a database", async (t) => {
  const taken = await newOrg();
  await admin.query(`select pgvpd.reserved_name_add('kept-name')`);
  const metrics = await token('metrics');
  const cases: [string, () => Promise<unknown>, Refusal][] = [
    [
      'a taken name',
      () => provision(operator, newId(), taken.name),
      { code: '23505', message: `pgvpd: database name '${taken.name}' is already taken`, hint: undefined },
    ],
    [
      'a reserved name',
      () => provision(operator, newId(), 'kept-name'),
      { code: '42939', message: `pgvpd: database name 'kept-name' is reserved`, hint: undefined },
    ],
    [
      'an invalid name',
      () => provision(operator, newId(), 'Not Valid'),
      {
        code: '22023',
        message: `pgvpd: invalid database name 'Not Valid'`,
        hint: 'database names match ^[a-z0-9][a-z0-9_-]{0,62}$',
      },
    ],
    [
      'an unknown server',
      () => provision(operator, newId(), null, null, 'shared', 'nowhere'),
      { code: '42704', message: `pgvpd: no server 'nowhere'`, hint: undefined },
    ],
    [
      'a bad placement',
      () => provision(operator, newId(), null, null, 'everywhere'),
      { code: '22023', message: 'pgvpd: placement must be shared or dedicated', hint: undefined },
    ],
    [
      'a dedicated org without a target database',
      () => provision(operator, newId(), null, null, 'dedicated'),
      {
        code: '22023',
        message: 'pgvpd: a dedicated org provisioned over the API needs a target database',
        hint: 'the API creates no database: create it on the server, then name it as target_database',
      },
    ],
    [
      'a token that is not an operator token',
      () => provision(metrics, newId()),
      notAllowed,
    ],
  ];
  for (const [what, call, expected] of cases) {
    t.same(await refusal(call()), expected, what);
  }
  const id = newId();
  const dedicated = `ded-${randomBytes(3).toString('hex')}`;
  t.same((await provision(operator, id, dedicated, null, 'dedicated', null, dedicated)).rows, [
    { id, database_name: dedicated, status: 'active', placement: 'dedicated', created: true },
  ]);
  t.same(
    (await provision(operator, id, dedicated, null, 'dedicated', 'default', dedicated)).rows[0]!.created,
    false,
  );
});

t.test('org_create takes a chosen id, and refuses one in use', async (t) => {
  const id = newId();
  const name = `chosen-${randomBytes(3).toString('hex')}`;
  t.equal(
    (await one<{ id: string }>(admin, `select pgvpd.org_create('C', $1, p_id => $2) as id`, [name, id])).id,
    id,
  );
  t.same(
    await refusal(admin.query(`select pgvpd.org_create('C', 'another-name', p_id => $1)`, [id])),
    { code: '23505', message: `pgvpd: org '${id}' already exists`, hint: undefined },
  );
  t.same(
    (await admin.query(`select count(*)::int as n from pgvpd.orgs() where database_name = 'another-name'`)).rows,
    [{ n: 0 }],
  );
});

t.test('a name check gives its reason: invalid, reserved, taken', async (t) => {
  const taken = await newOrg();
  const check = async (name: string | null) =>
    one<{ available: boolean; reason: string | null }>(
      api,
      'select * from pgvpd.api_name_available($1, $2)',
      [operator, name],
    );
  t.same(await check(`free-${randomBytes(3).toString('hex')}`), { available: true, reason: null });
  t.same(await check('Upper'), { available: false, reason: 'invalid' });
  t.same(await check(null), { available: false, reason: 'invalid' });
  t.same(await check('postgres'), { available: false, reason: 'reserved' });
  t.same(await check(taken.name), { available: false, reason: 'taken' });
  t.same(
    await refusal(api.query('select * from pgvpd.api_name_available($1, $2)', [await token('org', taken.id), 'x'])),
    notAllowed,
    'operator tokens only',
  );
});

t.test('read, suspend, resume and remove an org', async (t) => {
  const org = await newOrg();
  const orgToken = await token('org', org.id);
  const got = await api.query('select * from pgvpd.api_org_get($1, $2)', [orgToken, org.id]);
  t.same(
    got.fields.map((f) => f.name),
    ['id', 'database_name', 'display_name', 'status', 'placement', 'server_name', 'target_database', 'user_count', 'created_at'],
  );
  t.same(
    got.rows.map((r: { id: string; status: string; user_count: number }) => [r.id, r.status, r.user_count]),
    [[org.id, 'active', 0]],
  );
  const missing = newId();
  t.same(await refusal(api.query('select * from pgvpd.api_org_get($1, $2)', [operator, missing])), {
    code: '42704',
    message: `pgvpd: no org '${missing}'`,
    hint: undefined,
  });
  const setStatus = (status: string | null, id = org.id) =>
    api.query('select * from pgvpd.api_org_set_status($1, $2, $3)', [operator, id, status]);
  t.same((await setStatus('suspended')).rows, [{ status: 'suspended', changed: true }]);
  t.same((await setStatus('suspended')).rows, [{ status: 'suspended', changed: false }]);
  t.same((await setStatus('active')).rows, [{ status: 'active', changed: true }]);
  t.same(await refusal(setStatus('gone')), {
    code: '22023',
    message: 'pgvpd: status must be active or suspended',
    hint: undefined,
  });
  t.same(await refusal(setStatus('active', missing)), {
    code: '42704',
    message: `pgvpd: no org '${missing}'`,
    hint: undefined,
  });
  t.same(
    await refusal(api.query('select pgvpd.api_org_remove($1, $2)', [orgToken, org.id])),
    notAllowed,
    'an org token may not remove its org',
  );
  await api.query('select pgvpd.api_org_remove($1, $2)', [operator, org.id]);
  t.same(await refusal(api.query('select * from pgvpd.api_org_get($1, $2)', [operator, org.id])), {
    code: '42704',
    message: `pgvpd: no org '${org.id}'`,
    hint: undefined,
  });
  t.same(await refusal(api.query('select pgvpd.api_org_remove($1, $2)', [operator, org.id])), {
    code: '42704',
    message: `pgvpd: no org '${org.id}'`,
    hint: undefined,
  });
  t.equal(
    (await refusal(api.query('select * from pgvpd.api_org_get($1, $2)', [orgToken, org.id]))).code,
    '28000',
    'its org token went with it',
  );
});

t.test('users: put creates then updates, never returning a verifier', async (t) => {
  const role = await customerRole(t);
  const second = await customerRole(t);
  const org = await newOrg();
  const put = (tok: string, username: string, verifier: string, connectAs: string | null) =>
    api.query<{ r: string }>('select pgvpd.api_user_put($1, $2, $3, $4, $5) as r', [
      tok,
      org.id,
      username,
      verifier,
      connectAs,
    ]);
  const v1 = makeVerifier('one');
  const v2 = makeVerifier('two');
  t.equal((await put(operator, 'alice', v1, role)).rows[0]!.r, 'created');
  t.equal((await put(operator, 'alice', v2, null)).rows[0]!.r, 'updated', 'without connect_as it keeps its role');
  t.equal((await put(operator, 'alice', v2, second)).rows[0]!.r, 'updated');
  const { rows } = await db.query('select username, scram_verifier, connect_as from pgvpd_private.org_users where org_id = $1', [
    org.id,
  ]);
  t.same(rows, [{ username: 'alice', scram_verifier: v2, connect_as: second }]);

  const listed = await api.query('select * from pgvpd.api_users($1, $2)', [operator, org.id]);
  t.same(listed.fields.map((f) => f.name), ['username', 'connect_as', 'created_at']);
  t.same(listed.rows.map((r: { username: string; connect_as: string }) => [r.username, r.connect_as]), [['alice', second]]);
  const got = await api.query('select * from pgvpd.api_user_get($1, $2, $3)', [operator, org.id, 'alice']);
  t.same(got.fields.map((f) => f.name), ['username', 'connect_as', 'created_at']);
  t.equal(JSON.stringify(got.rows).includes('SCRAM'), false, 'no verifier comes back');

  const badVerifier = {
    code: '22023',
    message: 'pgvpd: verifier is not a SCRAM-SHA-256 verifier',
    hint: "the format is PostgreSQL's: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, in base64",
  };
  t.same(await refusal(put(operator, 'alice', 'secret', null)), badVerifier, 'a password is no verifier');
  t.same(await refusal(put(operator, 'alice', makeVerifier('x', { iterations: 1000 }), null)), {
    code: '22023',
    message: 'pgvpd: verifier has fewer than 4096 iterations',
    hint: 'compute it with at least 4096 iterations of PBKDF2, as PostgreSQL does',
  });
  t.same(await refusal(put(operator, 'bob', v1, null)), {
    code: '22023',
    message: `pgvpd: new user 'bob' needs a connect_as role`,
    hint: undefined,
  });
  t.same(await refusal(put(operator, '', v1, role)), {
    code: '22023',
    message: 'pgvpd: username must be 1 to 63 characters without control characters',
    hint: undefined,
  });
  const superuser = (await scratchRole(t, db, 'superuser')).name;
  t.same((await refusal(put(operator, 'bob', v1, superuser))).message, `pgvpd: connect_as role ${superuser} is a superuser`);

  await api.query('select pgvpd.api_user_remove($1, $2, $3)', [operator, org.id, 'alice']);
  const noAlice = { code: '42704', message: `pgvpd: no user 'alice' in org '${org.id}'`, hint: undefined };
  t.same(await refusal(api.query('select * from pgvpd.api_user_get($1, $2, $3)', [operator, org.id, 'alice'])), noAlice);
  t.same(await refusal(api.query('select pgvpd.api_user_remove($1, $2, $3)', [operator, org.id, 'alice'])), noAlice);
  const missing = newId();
  t.same(await refusal(api.query('select * from pgvpd.api_users($1, $2)', [operator, missing])), {
    code: '42704',
    message: `pgvpd: no org '${missing}'`,
    hint: undefined,
  });
});

t.test('ten concurrent puts of a new user: one creates it, nine update it', async (t) => {
  const role = await customerRole(t);
  const org = await newOrg();
  const clients = await Promise.all(Array.from({ length: 10 }, () => connect(apiLogin.url)));
  t.teardown(() => Promise.all(clients.map((c) => c.end())));
  const outcomes = await Promise.all(
    clients.map(async (c) => {
      const { rows } = await c.query<{ r: string }>(
        'select pgvpd.api_user_put($1, $2, $3, $4, $5) as r',
        [operator, org.id, 'zoe', makeVerifier('pw'), role],
      );
      return rows[0]!.r;
    }),
  );
  t.same(
    [outcomes.filter((o) => o === 'created').length, outcomes.filter((o) => o === 'updated').length],
    [1, 9],
  );
});

t.test('an org token chooses connect_as from its allow-list only; the refusal names the role', async (t) => {
  const allowed = await customerRole(t);
  const other = await customerRole(t);
  const org = await newOrg();
  const orgToken = await token('org', org.id);
  const put = (username: string, connectAs: string | null) =>
    api.query<{ r: string }>('select pgvpd.api_user_put($1, $2, $3, $4, $5) as r', [
      orgToken,
      org.id,
      username,
      makeVerifier('pw'),
      connectAs,
    ]);
  const refused = (role: string) => ({
    code: '42501',
    message: `pgvpd: connect_as role ${role} is not allowed for this org`,
    hint: 'an operator allows it: pgvpd org allow-role <org> <role>',
  });
  t.same(await refusal(put('carol', allowed)), refused(allowed), 'nothing is allowed at first');
  t.same(await refusal(put('carol', 'no_such_role')), refused('no_such_role'), 'a missing role is refused alike');

  t.same(
    await refusal(api.query('select pgvpd.api_org_allow_role($1, $2, $3)', [orgToken, org.id, allowed])),
    notAllowed,
    'an org token may not allow itself a role',
  );
  const allow = (role: string) =>
    one<{ r: boolean }>(api, 'select pgvpd.api_org_allow_role($1, $2, $3) as r', [operator, org.id, role]);
  t.equal((await allow(allowed)).r, true);
  t.equal((await allow(allowed)).r, false, 'allowing it again changes nothing');
  t.same(
    (await admin.query<{ r: string }>('select r from pgvpd.org_allowed_roles($1) r', [org.id])).rows,
    [{ r: allowed }],
  );
  t.equal((await put('carol', allowed)).rows[0]!.r, 'created');
  t.same(await refusal(put('carol', other)), refused(other), 'nor may it move a user to another role');
  t.equal((await put('carol', allowed)).rows[0]!.r, 'updated', 'its own role again is fine');

  const nologin = `nologin_${randomBytes(4).toString('hex')}`;
  await db.query(`create role ${nologin} nologin`);
  t.teardown(() => db.query(`drop role if exists ${nologin}`));
  t.same(await refusal(allow(nologin)), {
    code: '22023',
    message: `pgvpd: connect_as role ${nologin} cannot log in`,
    hint: `alter role ${nologin} login`,
  }, 'only a role check_connect_as accepts can be allowed');

  const disallow = (role: string) =>
    one<{ r: boolean }>(api, 'select pgvpd.api_org_disallow_role($1, $2, $3) as r', [operator, org.id, role]);
  t.equal((await disallow(allowed)).r, true);
  t.equal((await disallow(allowed)).r, false);
  t.same(await refusal(put('dan', allowed)), refused(allowed), 'disallowed: refused for new users');
  t.same(
    (await api.query('select username, connect_as from pgvpd.api_users($1, $2)', [orgToken, org.id])).rows,
    [{ username: 'carol', connect_as: allowed }],
    'an existing user keeps its role',
  );
  const otherOrg = await newOrg();
  await admin.query('select pgvpd.org_allow_role($1, $2)', [otherOrg.id, other]);
  t.same(await refusal(put('dan', other)), refused(other), "another org's allowed role is not this org's");
});

t.test('org_validate: active, suspended, unknown (no row), invalid (22023)', async (t) => {
  const org = await newOrg();
  const validate = (name: string | null) => api.query('select * from pgvpd.org_validate($1)', [name]);
  t.same((await validate(org.name)).rows, [{ database_name: org.name, active: true }]);
  await admin.query('select pgvpd.org_suspend($1)', [org.id]);
  t.same((await validate(org.name)).rows, [{ database_name: org.name, active: false }]);
  t.same((await validate('no-such-org')).rows, []);
  t.same((await validate('postgres')).rows, [], 'a reserved name is no org');
  for (const name of ['Bad Name', '', '-x', 'a'.repeat(64)]) {
    t.same(await refusal(validate(name)), {
      code: '22023',
      message: `pgvpd: invalid database name '${name}'`,
      hint: 'database names match ^[a-z0-9][a-z0-9_-]{0,62}$',
    }, JSON.stringify(name));
  }
  t.same(await refusal(validate(null)), {
    code: '22023',
    message: 'pgvpd: invalid database name NULL',
    hint: 'database names match ^[a-z0-9][a-z0-9_-]{0,62}$',
  });
});
