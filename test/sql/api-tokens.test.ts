// API tokens of the control plane (migration 000011): their format, that only their hash is
// stored, expiry and revocation on the very next call, what each scope may do (an org token's
// refusal says nothing about the org asked for), and that the API login (a member of pgvpd_api)
// may call the token-gated and public functions and nothing else of pgvpd's.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import type pg from 'pg';
import t from 'tap';
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
}

/** What a failed query said (SQLSTATE, message, hint, detail), or code 'no error'. */
async function refusal(promise: Promise<unknown>): Promise<Refusal> {
  try {
    await promise;
    return { code: 'no error', message: '' };
  } catch (error) {
    const { code, message, hint, detail } = error as Refusal;
    return { code, message, hint, detail };
  }
}

const invalidToken: Refusal = {
  code: '28000',
  message: 'pgvpd: invalid token',
  hint: undefined,
  detail: undefined,
};
const notAllowed: Refusal = {
  code: '42501',
  message: 'pgvpd: token not allowed here',
  hint: undefined,
  detail: undefined,
};

async function one<R extends pg.QueryResultRow>(
  client: pg.Client,
  sql: string,
  params: unknown[] = [],
): Promise<R> {
  return (await client.query<R>(sql, params)).rows[0]!;
}

async function newOrg(): Promise<string> {
  const name = `tok-${randomBytes(4).toString('hex')}`;
  return (await one<{ id: string }>(admin, 'select pgvpd.org_create($1, $1) as id', [name])).id;
}

async function newToken(
  scope: string,
  org: string | null = null,
  ttl: string | null = null,
): Promise<{ id: string; token: string; expires_at: Date | null }> {
  return one(admin, 'select * from pgvpd.token_create($1, $2, $3, $4::interval)', [
    scope,
    org,
    `${scope} token`,
    ttl,
  ]);
}

function authorize(token: string | null, cls: string, org: string | null = null) {
  return one<{ id: string }>(api, 'select pgvpd.api_authorize($1, $2, $3) as id', [
    token,
    cls,
    org,
  ]);
}

const acme = await newOrg();
const globex = await newOrg();
const missingOrg = '00000000-0000-4000-8000-00000000beef';

t.test('a token is pgvpd_tok_, 64 hex characters of random bytes and an 8-hex checksum', async (t) => {
  const { token } = await newToken('operator');
  t.match(token, /^pgvpd_tok_[0-9a-f]{72}$/);
  t.equal(token.length, 82);
  const body = token.slice(10, 74);
  const checksum = createHash('sha256').update(`pgvpd_tok_${body}`).digest('hex').slice(0, 8);
  t.equal(token.slice(74), checksum, 'the checksum is sha256(prefix || body), first 8 hex');
  const other = (await newToken('operator')).token;
  t.not(other.slice(10, 74), body, 'two tokens share no body');
});

t.test('a malformed token is refused exactly as an unknown one', async (t) => {
  const { token } = await newToken('operator');
  t.same(await authorize(token, 'operator').then(() => 'accepted'), 'accepted');
  const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === '0' ? '1' : '0') + s.slice(i + 1);
  const body = randomBytes(32).toString('hex');
  const wellFormedUnknown =
    `pgvpd_tok_${body}` + createHash('sha256').update(`pgvpd_tok_${body}`).digest('hex').slice(0, 8);
  const variants: Record<string, string | null> = {
    'a well-formed token never issued': wellFormedUnknown,
    'one checksum character flipped': flip(token, 80),
    'one body character flipped': flip(token, 20),
    'upper case': token.toUpperCase(),
    'without its prefix': token.slice(10),
    'with an invite prefix': `pgvpd_inv_${token.slice(10)}`,
    'one character short': token.slice(0, -1),
    'one character more': `${token}0`,
    'with a trailing newline': `${token}\n`,
    empty: '',
    null: null,
  };
  for (const [what, value] of Object.entries(variants)) {
    t.same(await refusal(authorize(value, 'operator')), invalidToken, what);
  }
});

t.test('only the hash of a token or an invite is stored: no part of one in pgvpd_private or a dump', async (t) => {
  const role = (await scratchRole(t, db, 'nosuperuser nobypassrls')).name;
  const tokens = [
    (await newToken('operator')).token,
    (await newToken('org', acme)).token,
    (await newToken('metrics')).token,
    (
      await one<{ invite: string }>(admin, 'select invite from pgvpd.invite_create($1, $2, $3)', [
        acme,
        'dana',
        role,
      ])
    ).invite,
  ];
  for (const token of tokens) await authorize(token, 'metrics', null).catch(() => undefined);
  const { rows: hashes } = await db.query<{ n: number; ok: boolean }>(
    `select count(*)::int as n, bool_and(length(token_hash) = 32) as ok
       from (select token_hash from pgvpd_private.api_tokens
             union all select token_hash from pgvpd_private.invites) h`,
  );
  t.ok(hashes[0]!.n >= 4, 'the tokens and the invite have rows');
  t.equal(hashes[0]!.ok, true, 'each row holds a 32-byte hash');
  // Every text the database holds in pgvpd_private, every row of every table as JSON.
  const { rows: tables } = await db.query<{ name: string }>(
    `select c.oid::regclass::text as name from pg_class c
      where c.relnamespace = 'pgvpd_private'::regnamespace and c.relkind = 'r'`,
  );
  let everything = '';
  for (const { name } of tables) {
    const { rows: data } = await db.query<{ j: string }>(
      `select coalesce(json_agg(r)::text, '') as j from ${name} r`,
    );
    everything += data[0]!.j;
  }
  /** 16-character pieces of a token's random part, as text and as the hex of that text. */
  const pieces = (token: string) => {
    const tail = token.slice(10);
    const out: string[] = [];
    for (let i = 0; i + 16 <= tail.length; i += 4) {
      const piece = tail.slice(i, i + 16);
      out.push(piece, Buffer.from(piece).toString('hex'));
    }
    return out;
  };
  const leaks = (text: string) => tokens.flatMap(pieces).filter((p) => text.includes(p));
  t.same(leaks(everything), [], 'no piece of a token, as text or bytea, in any row of pgvpd_private');

  const pgDump = `/usr/lib/postgresql/${String(db.server.version)}/bin/pg_dump`;
  if (!existsSync(pgDump)) {
    t.comment(`no pg_dump for PostgreSQL ${String(db.server.version)} here: the rows were checked`);
    return;
  }
  const dump = execFileSync(pgDump, ['--dbname', db.url], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  t.match(dump, /CREATE TABLE pgvpd_private\.api_tokens/, 'the dump holds the tokens table');
  t.match(dump, /COPY pgvpd_private\.invites/, 'and the invites, with their rows');
  t.same(leaks(dump), [], 'no piece of a token in pg_dump of the database, schema and data');
});

t.test('an expired token is refused exactly as an unknown one', async (t) => {
  const { id, token, expires_at } = await newToken('operator', null, '1 hour');
  t.ok(expires_at, 'it has an expiry');
  t.ok(await authorize(token, 'operator'), 'valid before its expiry');
  await db.query(
    `update pgvpd_private.api_tokens set expires_at = clock_timestamp() - interval '1 second' where id = $1`,
    [id],
  );
  t.same(await refusal(authorize(token, 'operator')), invalidToken);
  const { expires_at: never } = await newToken('metrics');
  t.equal(never, null, 'without a ttl a token does not expire');
});

t.test('a revoked token is refused by the very next call', async (t) => {
  const { id, token } = await newToken('org', acme);
  t.equal((await authorize(token, 'org', acme)).id, id, 'api_authorize returns the token id');
  t.equal((await one<{ r: boolean }>(admin, 'select pgvpd.token_revoke($1) as r', [id])).r, true);
  t.same(await refusal(authorize(token, 'org', acme)), invalidToken);
  t.same(
    await refusal(api.query('select * from pgvpd.api_org_get($1, $2)', [token, acme])),
    invalidToken,
    'and by every api function',
  );
  t.equal(
    (await one<{ r: boolean }>(admin, 'select pgvpd.token_revoke($1) as r', [id])).r,
    false,
    'revoking again changes nothing',
  );
  t.same(await refusal(admin.query('select pgvpd.token_revoke($1)', [missingOrg])), {
    code: '42704',
    message: `pgvpd: no token '${missingOrg}'`,
    hint: undefined,
    detail: undefined,
  });
});

t.test('each scope acts in its own classes only', async (t) => {
  const operator = (await newToken('operator')).token;
  const org = (await newToken('org', acme)).token;
  const metrics = (await newToken('metrics')).token;
  const outcomes: string[] = [];
  for (const [name, token] of Object.entries({ operator, org, metrics })) {
    for (const [cls, target] of [
      ['operator', null],
      ['metrics', null],
      ['org', acme],
      ['org', globex],
      ['org', missingOrg],
      ['org', null],
    ] as const) {
      const r = await refusal(authorize(token, cls, target));
      const on = target === acme ? ' acme' : target === globex ? ' globex' : target ? ' missing' : '';
      outcomes.push(`${name} as ${cls}${on}: ${r.code}`);
      if (r.code !== 'no error') t.same(r, notAllowed, `${name} as ${cls}${on}`);
    }
  }
  t.same(outcomes, [
    'operator as operator: no error',
    'operator as metrics: no error',
    'operator as org acme: no error',
    'operator as org globex: no error',
    'operator as org missing: no error',
    'operator as org: no error',
    'org as operator: 42501',
    'org as metrics: 42501',
    'org as org acme: no error',
    'org as org globex: 42501',
    'org as org missing: 42501',
    'org as org: 42501',
    'metrics as operator: 42501',
    'metrics as metrics: no error',
    'metrics as org acme: 42501',
    'metrics as org globex: 42501',
    'metrics as org missing: 42501',
    'metrics as org: 42501',
  ]);
  t.same(await refusal(authorize(operator, 'admin')), {
    code: '22023',
    message: `pgvpd: unknown token class 'admin'`,
    hint: 'token classes are operator, org and metrics',
    detail: undefined,
  });
});

t.test('an org token on another org, a missing org or provisioning gets one and the same 42501', async (t) => {
  const org = (await newToken('org', acme)).token;
  const calls: [string, string, unknown[]][] = [
    ['another org', 'select * from pgvpd.api_org_get($1, $2)', [org, globex]],
    ['an org that does not exist', 'select * from pgvpd.api_org_get($1, $2)', [org, missingOrg]],
    ['the users of another org', 'select * from pgvpd.api_users($1, $2)', [org, globex]],
    ['the users of a missing org', 'select * from pgvpd.api_users($1, $2)', [org, missingOrg]],
    [
      'provisioning',
      'select * from pgvpd.api_org_provision($1, $2)',
      [org, '00000000-0000-4000-8000-000000000001'],
    ],
    ['provisioning its own org', 'select * from pgvpd.api_org_provision($1, $2)', [org, acme]],
    ['suspending its own org', 'select * from pgvpd.api_org_set_status($1, $2, $3)', [org, acme, 'suspended']],
    ['allowing itself a role', 'select pgvpd.api_org_allow_role($1, $2, $3)', [org, acme, 'app_user']],
    ['a name check', 'select * from pgvpd.api_name_available($1, $2)', [org, 'free-name']],
  ];
  for (const [what, sql, params] of calls) {
    t.same(await refusal(api.query(sql, params)), notAllowed, what);
  }
  t.same(
    (await api.query('select id from pgvpd.api_org_get($1, $2)', [org, acme])).rows,
    [{ id: acme }],
    'its own org it may read',
  );
});

t.test('token_create refuses a bad scope, org, ttl or name', async (t) => {
  const cases: [string, unknown[], Refusal][] = [
    [
      'an unknown scope',
      ['admin', null, null, null],
      {
        code: '22023',
        message: `pgvpd: invalid token scope 'admin'`,
        hint: 'token scopes are operator, org and metrics',
        detail: undefined,
      },
    ],
    ['an org token without an org', ['org', null, null, null], { code: '22023', message: 'pgvpd: an org token needs an org', hint: undefined, detail: undefined }],
    [
      'an operator token with an org',
      ['operator', acme, null, null],
      { code: '22023', message: 'pgvpd: only an org token is bound to an org', hint: undefined, detail: undefined },
    ],
    ['a zero ttl', ['metrics', null, null, '0'], { code: '22023', message: 'pgvpd: token ttl must be positive', hint: undefined, detail: undefined }],
    ['a negative ttl', ['metrics', null, null, '-1 hour'], { code: '22023', message: 'pgvpd: token ttl must be positive', hint: undefined, detail: undefined }],
    [
      'a name with a control character',
      ['metrics', null, 'a\nb', null],
      {
        code: '22023',
        message: 'pgvpd: token name must be 1 to 255 characters without control characters',
        hint: undefined,
        detail: undefined,
      },
    ],
    ['a missing org', ['org', missingOrg, null, null], { code: '42704', message: `pgvpd: no org '${missingOrg}'`, hint: undefined, detail: undefined }],
  ];
  for (const [what, params, expected] of cases) {
    t.same(await refusal(admin.query('select * from pgvpd.token_create($1, $2, $3, $4::interval)', params)), expected, what);
  }
});

t.test('tokens() lists tokens without their hashes, and last use at most once a minute', async (t) => {
  const org = await newOrg();
  const { id, token } = await newToken('org', org);
  const before = await admin.query('select * from pgvpd.tokens($1)', [org]);
  t.same(
    before.fields.map((f) => f.name),
    ['id', 'scope', 'org_id', 'name', 'created_at', 'expires_at', 'revoked_at', 'last_used_at'],
  );
  t.same(
    before.rows.map((r: { id: string; scope: string; last_used_at: Date | null }) => [r.id, r.scope, r.last_used_at]),
    [[id, 'org', null]],
    'only the org asked for, never used yet',
  );
  await authorize(token, 'org', org);
  const first = (await one<{ last_used_at: Date }>(admin, 'select last_used_at from pgvpd.tokens($1)', [org])).last_used_at;
  t.ok(first, 'a use is recorded');
  await authorize(token, 'org', org);
  const second = (await one<{ last_used_at: Date }>(admin, 'select last_used_at from pgvpd.tokens($1)', [org])).last_used_at;
  t.equal(second.getTime(), first.getTime(), 'a second use within the minute writes nothing');
  await db.query(
    `update pgvpd_private.api_tokens set last_used_at = last_used_at - interval '2 minutes' where id = $1`,
    [id],
  );
  await authorize(token, 'org', org);
  const third = (await one<{ last_used_at: Date }>(admin, 'select last_used_at from pgvpd.tokens($1)', [org])).last_used_at;
  t.ok(third.getTime() > first.getTime() - 1000, 'a use a minute later is recorded again');
  t.same(await refusal(admin.query('select * from pgvpd.tokens($1)', [missingOrg])), {
    code: '42704',
    message: `pgvpd: no org '${missingOrg}'`,
    hint: undefined,
    detail: undefined,
  });
  await admin.query('select pgvpd.org_remove($1)', [org]);
  t.same(await refusal(authorize(token, 'org', org)), invalidToken, 'removing the org removes its tokens');
});

t.test('a token is checked in a read-only transaction too, which it leaves unwritten', async (t) => {
  const org = await newOrg();
  const { token } = await newToken('org', org);
  const client = await connect(apiLogin.url);
  t.teardown(() => client.end());
  await client.query('begin read only');
  t.equal(
    (await client.query('select * from pgvpd.api_org_get($1, $2)', [token, org])).rows.length,
    1,
  );
  await client.query('commit');
  t.same(
    (await admin.query('select last_used_at from pgvpd.tokens($1)', [org])).rows,
    [{ last_used_at: null }],
    'no use recorded',
  );
  await client.query('begin read only');
  t.same(await refusal(client.query('select pgvpd.api_authorize($1, $2)', ['pgvpd_tok_0', 'metrics'])), invalidToken);
  await client.query('rollback');
});

t.test('the API login may not call the admin functions or read pgvpd_private (42501)', async (t) => {
  const denied = [
    'select * from pgvpd.orgs()',
    `select pgvpd.org_create('x')`,
    `select * from pgvpd.token_create('operator')`,
    'select * from pgvpd.tokens()',
    `select pgvpd.user_add('${acme}', 'u', 'v', 'r')`,
    `select * from pgvpd.invite_create('${acme}', 'u', 'r')`,
    `select pgvpd.org_allow_role('${acme}', 'r')`,
    'select pgvpd.catalog_snapshot()',
    'select pgvpd.issue_context(1, $$t$$)',
    'select * from pgvpd_private.api_tokens',
    'select * from pgvpd_private.invites',
    'select * from pgvpd_private.orgs',
    'select * from pgvpd_private.org_users',
    `select pgvpd_private.secret_hash('pgvpd_tok_', 'x')`,
  ];
  for (const sql of denied) {
    t.equal((await refusal(api.query(sql))).code, '42501', sql);
  }
  t.equal(
    (
      await db.query<{ usage: boolean }>(
        `select has_schema_privilege($1, 'pgvpd_private', 'USAGE') as usage`,
        [apiLogin.name],
      )
    ).rows[0]!.usage,
    false,
    'no USAGE on pgvpd_private',
  );
  const { rows } = await db.query<{ fn: string }>(
    `select p.oid::regprocedure::text as fn from pg_proc p
      where p.pronamespace in ('pgvpd'::regnamespace, 'pgvpd_private'::regnamespace)
        and has_function_privilege($1, p.oid, 'EXECUTE')
        and not has_function_privilege('public', p.oid, 'EXECUTE')
      order by 1`,
    [apiLogin.name],
  );
  t.same(
    rows.map((r) => r.fn),
    [
      'pgvpd.api_authorize(text,text,uuid)',
      'pgvpd.api_invite_create(text,uuid,text,name,interval)',
      'pgvpd.api_invite_revoke(text,uuid,uuid)',
      'pgvpd.api_invites(text,uuid)',
      'pgvpd.api_name_available(text,text)',
      'pgvpd.api_org_allow_role(text,uuid,name)',
      'pgvpd.api_org_disallow_role(text,uuid,name)',
      'pgvpd.api_org_get(text,uuid)',
      'pgvpd.api_org_provision(text,uuid,text,text,text,text,text)',
      'pgvpd.api_org_remove(text,uuid)',
      'pgvpd.api_org_set_status(text,uuid,text)',
      'pgvpd.api_user_get(text,uuid,text)',
      'pgvpd.api_user_put(text,uuid,text,text,name)',
      'pgvpd.api_user_remove(text,uuid,text)',
      'pgvpd.api_users(text,uuid)',
      'pgvpd.invite_info(text)',
      'pgvpd.invite_redeem(text,text)',
      'pgvpd.org_validate(text)',
    ],
    'beyond what PUBLIC may: the api_* functions and the three public ones',
  );
});
