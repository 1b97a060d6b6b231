// pgvpd token, pgvpd invite and pgvpd org allow-role / disallow-role against the catalog of a
// real database. A token or an invite is printed once, when created, and the catalog keeps only
// its SHA-256 hash; what the CLI prints works where it is meant to (api_authorize takes the
// token, invite_info the invite of the setup link); revoking takes effect at once. Every refusal
// is checked with its exact message and exit code.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import { createTestDatabase, type TestLike } from '../support/postgres.js';
import { installPgvpd, sqlstate } from '../support/pgvpd.js';
import { pgvpd, type CliResult } from './run-cli.js';

const db = await createTestDatabase(t);
await installPgvpd(db);

const tokenPattern = /^pgvpd_tok_[0-9a-f]{72}$/;
const invitePattern = /^pgvpd_inv_[0-9a-f]{72}$/;
const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A role made for this test (roles are cluster-wide), dropped at its end. */
async function role(t: TestLike, options: string): Promise<string> {
  const name = `pgvpd_cas_${randomBytes(4).toString('hex')}`;
  await db.query(`create role ${name} ${options}`);
  t.teardown(async () => {
    await db.query(`drop owned by ${name}`).catch(() => undefined);
    await db.query(`drop role if exists ${name}`).catch(() => undefined);
  });
  return name;
}

const app = await role(t, 'login nosuperuser nobypassrls');
const acme = (await db.query<{ id: string }>("select pgvpd.org_create('Acme', 'acme') as id"))
  .rows[0]!.id;
const globex = (await db.query<{ id: string }>("select pgvpd.org_create('Globex', 'globex') as id"))
  .rows[0]!.id;

/** The PGVPD_* settings invite create may read, unset for a call unless given. */
const settingVars = ['PGVPD_PUBLIC_URL', 'PGVPD_ADMIN_PORT', 'PGVPD_ADMIN_HOST'] as const;

/** pgvpd(...args) with exactly these of settingVars set (the others unset), then put back. */
async function pgvpdEnv(
  env: Partial<Record<(typeof settingVars)[number], string>>,
  ...args: string[]
): Promise<CliResult> {
  const saved = new Map(settingVars.map((name) => [name, process.env[name]]));
  const set = (name: string, value: string | undefined): void => {
    if (value === undefined) Reflect.deleteProperty(process.env, name);
    else process.env[name] = value;
  };
  for (const name of settingVars) set(name, env[name]);
  try {
    return await pgvpd(...args);
  } finally {
    for (const [name, value] of saved) set(name, value);
  }
}

const sha256 = (text: string): Buffer => createHash('sha256').update(text).digest();

/** The id api_authorize gives a token for a class, or the SQLSTATE it raises. */
async function authorize(token: string, cls: string, org: string | null = null): Promise<string> {
  const call = db.query<{ id: string }>('select pgvpd.api_authorize($1, $2, $3) as id', [
    token,
    cls,
    org,
  ]);
  const code = await sqlstate(call);
  return code === 'no error' ? (await call).rows[0]!.id : code;
}

t.test('token create prints an operator token once; only its hash is stored', async (t) => {
  const result = await pgvpd('token', 'create', '--scope', 'operator', '--db', db.url);
  t.equal(result.code, 0);
  const token = result.out.trimEnd();
  t.match(token, tokenPattern, 'stdout is the token alone on its line');
  t.equal(result.out, `${token}\n`);
  const { rows } = await db.query<{ id: string; token_hash: Buffer; scope: string }>(
    'select id, token_hash, scope from pgvpd_private.api_tokens',
  );
  t.equal(rows.length, 1);
  const [stored] = rows;
  t.equal(
    result.err,
    `created operator token ${stored!.id} (never expires); it is shown only this once:\n`,
  );
  t.same(stored!.token_hash, sha256(token), 'the catalog keeps sha256(token)');
  t.equal(stored!.scope, 'operator');
  t.equal(await authorize(token, 'operator'), stored!.id, 'the printed token is accepted');
});

t.test('token create --scope org binds the token to one org; --json tells all', async (t) => {
  const before = Date.now();
  const result = await pgvpd(
    'token',
    'create',
    '--scope',
    'org',
    '--org',
    'acme',
    '--name',
    'acme admin tool',
    '--ttl',
    '3600',
    '--json',
    '--db',
    db.url,
  );
  t.equal(result.code, 0);
  t.equal(result.err, '');
  const created = JSON.parse(result.out) as Record<string, string | null>;
  t.same(Object.keys(created), [
    'id',
    'token',
    'scope',
    'org_id',
    'database_name',
    'name',
    'expires_at',
  ]);
  t.match(created, {
    id: uuid,
    token: tokenPattern,
    scope: 'org',
    org_id: acme,
    database_name: 'acme',
    name: 'acme admin tool',
  });
  const expires = Date.parse(created.expires_at!);
  t.ok(expires >= before + 3_600_000 - 5_000 && expires <= Date.now() + 3_600_000 + 5_000);
  t.equal(await authorize(created.token!, 'org', acme), created.id);
  t.equal(await authorize(created.token!, 'org', globex), '42501', 'not for another org');
  t.equal(await authorize(created.token!, 'operator'), '42501', 'not for operator routes');
});

t.test(
  'token create --scope metrics makes a token /metrics accepts, and nothing else',
  async (t) => {
    const result = await pgvpd('token', 'create', '--scope', 'metrics', '--db', db.url);
    t.equal(result.code, 0);
    const token = result.out.trimEnd();
    t.match(result.err, /^created metrics token [0-9a-f-]{36} \(never expires\); it is shown/);
    t.match(await authorize(token, 'metrics'), uuid);
    t.equal(await authorize(token, 'operator'), '42501');
  },
);

t.test('token list shows every token, never the token, and filters by org', async (t) => {
  const all = await pgvpd('token', 'list', '--db', db.url);
  t.equal(all.code, 0);
  t.equal(all.err, '');
  const lines = all.out.trimEnd().split('\n');
  t.match(lines[0], /^id +scope +org +name +state +created_at +expires_at +last_used_at$/);
  t.equal(lines.length, 2 + 3, 'a header, a rule and three tokens');
  t.match(lines[3], /^[0-9a-f-]{36} +org +acme +acme admin tool +active +\d{4}-/);
  t.notMatch(all.out, /pgvpd_tok_/, 'no token is ever listed');

  const json = await pgvpd('token', 'list', '--org', 'acme', '--json', '--db', db.url);
  t.equal(json.code, 0);
  const rows = JSON.parse(json.out) as Record<string, unknown>[];
  t.equal(rows.length, 1);
  t.same(Object.keys(rows[0]!).sort(), [
    'created_at',
    'database_name',
    'expires_at',
    'id',
    'last_used_at',
    'name',
    'org_id',
    'revoked_at',
    'scope',
    'state',
  ]);
  t.match(rows[0], { scope: 'org', org_id: acme, database_name: 'acme', state: 'active' });
  t.same(await pgvpd('token', 'list', '--org', 'globex', '--db', db.url), {
    code: 0,
    out: 'no tokens for org globex\n',
    err: '',
  });
});

t.test('token revoke refuses the token on its next use, and says so twice', async (t) => {
  const created = await pgvpd('token', 'create', '--scope', 'operator', '--db', db.url);
  const token = created.out.trimEnd();
  const id = await authorize(token, 'operator');
  t.match(id, uuid);
  t.same(await pgvpd('token', 'revoke', id, '--db', db.url), {
    code: 0,
    out: `revoked token ${id}\n`,
    err: '',
  });
  t.equal(await authorize(token, 'operator'), '28000', 'refused at once');
  t.same(await pgvpd('token', 'revoke', id.toUpperCase(), '--db', db.url), {
    code: 0,
    out: `token ${id} was revoked already\n`,
    err: '',
  });
  const list = JSON.parse((await pgvpd('token', 'list', '--json', '--db', db.url)).out) as {
    id: string;
    state: string;
  }[];
  t.equal(list.find((row) => row.id === id)?.state, 'revoked');
});

t.test('token commands refuse what cannot work, with the exact message and exit 1', async (t) => {
  const unknown = randomUUID();
  const cases: [string[], string][] = [
    [['create', '--scope', 'org'], 'error: an org token needs --org <org>\n'],
    [
      ['create', '--scope', 'operator', '--org', 'acme'],
      'error: an operator token is bound to no org: leave out --org\n',
    ],
    [
      ['create', '--scope', 'metrics', '--org', 'acme'],
      'error: a metrics token is bound to no org: leave out --org\n',
    ],
    [
      ['create', '--scope', 'root'],
      "error: option '--scope <scope>' argument 'root' is invalid. Allowed choices are operator, org, metrics.\n",
    ],
    [['create'], "error: required option '--scope <scope>' not specified\n"],
    [
      ['create', '--scope', 'operator', '--ttl', '0'],
      'error: --ttl must be a whole number of seconds above 0, got "0"\n',
    ],
    [
      ['create', '--scope', 'operator', '--ttl', '1.5'],
      'error: --ttl must be a whole number of seconds above 0, got "1.5"\n',
    ],
    [
      ['create', '--scope', 'org', '--org', 'nope'],
      'error: no org "nope": name an org by its id or its database name (pgvpd org list)\n',
    ],
    [
      ['create', '--scope', 'operator', '--name', 'tab\there'],
      'error: pgvpd: token name must be 1 to 255 characters without control characters (SQLSTATE 22023)\n',
    ],
    [
      ['list', '--org', 'nope'],
      'error: no org "nope": name an org by its id or its database name (pgvpd org list)\n',
    ],
    [
      ['revoke', 'not-a-uuid'],
      'error: "not-a-uuid" is not a token id: ids are uuids (pgvpd token list)\n',
    ],
    [['revoke', unknown], `error: pgvpd: no token '${unknown}' (SQLSTATE 42704)\n`],
  ];
  const { rows: before } = await db.query('select id from pgvpd_private.api_tokens');
  for (const [args, err] of cases) {
    t.same(
      await pgvpd('token', ...args, '--db', db.url),
      { code: 1, out: '', err },
      args.join(' '),
    );
  }
  const { rows: after } = await db.query('select id from pgvpd_private.api_tokens');
  t.equal(after.length, before.length, 'no token was created');
});

t.test('invite create prints the setup link once; the invite in it is open', async (t) => {
  const result = await pgvpdEnv(
    {},
    'invite',
    'create',
    'acme',
    'bob',
    '--connect-as',
    app,
    '--public-url',
    'https://db.example.com/',
    '--db',
    db.url,
  );
  t.equal(result.code, 0);
  const link = /^https:\/\/db\.example\.com\/setup#invite=(pgvpd_inv_[0-9a-f]{72})\n$/.exec(
    result.out,
  );
  if (link === null) throw new Error(`no setup link in ${result.out}`);
  const invite = link[1]!;
  t.match(invite, invitePattern);
  const { rows } = await db.query<{ id: string; token_hash: Buffer; expires_at: Date }>(
    'select id, token_hash, expires_at from pgvpd_private.invites where username = $1',
    ['bob'],
  );
  t.equal(rows.length, 1);
  const [stored] = rows;
  t.same(stored!.token_hash, sha256(invite), 'the catalog keeps sha256(invite)');
  t.equal(
    result.err,
    `invite ${stored!.id} for bob in org acme, connecting as ${app}, open until ${stored!.expires_at.toISOString()}; the link is shown only this once:\n`,
  );
  const hours = (stored!.expires_at.getTime() - Date.now()) / 3_600_000;
  t.ok(hours > 23.9 && hours <= 24, 'open for 24 hours by default');
  const { rows: info } = await db.query('select * from pgvpd.invite_info($1)', [invite]);
  t.match(info, [{ database_name: 'acme', display_name: 'Acme', username: 'bob' }]);
});

t.test(
  'the public URL comes from --public-url, PGVPD_PUBLIC_URL, or admin_host:admin_port',
  async (t) => {
    const create = (env: Record<string, string>, ...more: string[]) =>
      pgvpdEnv(
        env,
        'invite',
        'create',
        'globex',
        'carol',
        '--connect-as',
        app,
        ...more,
        '--db',
        db.url,
      );
    const origin = (result: CliResult): string => result.out.replace(/\/setup#invite=.*\n$/, '');

    t.equal(
      origin(await create({ PGVPD_PUBLIC_URL: 'https://setup.example.org' })),
      'https://setup.example.org',
    );
    t.equal(
      origin(
        await create(
          { PGVPD_PUBLIC_URL: 'https://ignored.example' },
          '--public-url',
          'http://127.0.0.1:9000',
        ),
      ),
      'http://127.0.0.1:9000',
      'the flag wins over the environment',
    );
    t.equal(origin(await create({ PGVPD_ADMIN_PORT: '8008' })), 'http://127.0.0.1:8008');
    t.equal(
      origin(await create({ PGVPD_ADMIN_PORT: '8008', PGVPD_ADMIN_HOST: '::1' })),
      'http://[::1]:8008',
    );
    const dir = mkdtempSync(join(tmpdir(), 'pgvpd-invite-config-'));
    const file = join(dir, 'pgvpd.conf');
    writeFileSync(file, 'admin_port = 7070\nadmin_host = "10.1.2.3"\n');
    t.equal(origin(await create({}, '--config', file)), 'http://10.1.2.3:7070');
    writeFileSync(file, 'admin_port = 7070\npublic_url = "https://public.example.net"\n');
    t.equal(
      origin(await create({}, '--config', file)),
      'https://public.example.net',
      'public_url wins',
    );
    const { rows } = await db.query<{ state: string }>('select state from pgvpd.invites($1)', [
      globex,
    ]);
    t.same(
      rows.map((row) => row.state),
      ['revoked', 'revoked', 'revoked', 'revoked', 'revoked', 'open'],
      'each new invite for carol revoked the open one',
    );
  },
);

t.test('invite create refuses, before creating anything, what cannot work', async (t) => {
  const { rows: before } = await db.query('select id from pgvpd_private.invites');
  const dave = ['invite', 'create', 'acme', 'dave', '--connect-as', app];
  const cases: [Record<string, string>, string[], string][] = [
    [
      {},
      [],
      'error: no public URL for the setup link: pass --public-url <url> or set PGVPD_PUBLIC_URL (or public_url or admin_port in --config): nothing was created\n',
    ],
    [
      {},
      ['--public-url', 'ftp://example.com'],
      'error: --public-url must be an http:// or https:// URL without ? or #, got "ftp://example.com"\n',
    ],
    [
      {},
      ['--public-url', 'example.com'],
      'error: --public-url must be an http:// or https:// URL, got "example.com"\n',
    ],
    [
      { PGVPD_PUBLIC_URL: 'https://x.example/?a=1' },
      [],
      'error: --public-url must be an http:// or https:// URL without ? or #, got "https://x.example/?a=1"\n',
    ],
    [
      { PGVPD_ADMIN_PORT: 'eighty' },
      [],
      'error: environment PGVPD_ADMIN_PORT: admin_port must be a port number, got "eighty"\n',
    ],
    [
      { PGVPD_PUBLIC_URL: 'https://db.example.com' },
      ['--ttl', '-5'],
      'error: --ttl must be a whole number of seconds above 0, got "-5"\n',
    ],
    [
      { PGVPD_PUBLIC_URL: 'https://db.example.com' },
      ['--ttl', '604801'],
      'error: pgvpd: invite ttl must be more than 0 and at most 7 days (SQLSTATE 22023)\n',
    ],
  ];
  for (const [env, more, err] of cases) {
    t.same(await pgvpdEnv(env, ...dave, ...more, '--db', db.url), { code: 1, out: '', err }, err);
  }
  const url = ['--public-url', 'https://db.example.com'];
  t.same(
    await pgvpdEnv(
      {},
      'invite',
      'create',
      'nope',
      'dave',
      '--connect-as',
      app,
      ...url,
      '--db',
      db.url,
    ),
    {
      code: 1,
      out: '',
      err: 'error: no org "nope": name an org by its id or its database name (pgvpd org list)\n',
    },
  );
  t.same(
    await pgvpdEnv(
      {},
      'invite',
      'create',
      'acme',
      'dave',
      '--connect-as',
      'pgvpd_no_such_role',
      ...url,
      '--db',
      db.url,
    ),
    {
      code: 1,
      out: '',
      err:
        'error: pgvpd: connect_as role pgvpd_no_such_role does not exist (SQLSTATE 42704)\n' +
        'hint: create the role first; pgvpd never creates or drops connect_as roles\n',
    },
  );
  await db.query('select pgvpd.user_add($1, $2, $3, $4)', [acme, 'erin', makeVerifier('pw'), app]);
  t.same(
    await pgvpdEnv(
      {},
      'invite',
      'create',
      'acme',
      'erin',
      '--connect-as',
      app,
      ...url,
      '--db',
      db.url,
    ),
    {
      code: 1,
      out: '',
      err: `error: pgvpd: user 'erin' already exists in org '${acme}' (SQLSTATE 23505)\n`,
    },
  );
  const { rows: after } = await db.query('select id from pgvpd_private.invites');
  t.equal(after.length, before.length, 'no invite was created');
});

t.test('invite list shows states, never invites; revoke closes an open one', async (t) => {
  const created = await pgvpdEnv(
    { PGVPD_PUBLIC_URL: 'https://db.example.com' },
    'invite',
    'create',
    'acme',
    'frank',
    '--connect-as',
    app,
    '--ttl',
    '60',
    '--json',
    '--db',
    db.url,
  );
  t.equal(created.code, 0);
  t.equal(created.err, '');
  const invite = JSON.parse(created.out) as Record<string, string>;
  t.same(Object.keys(invite), [
    'id',
    'invite',
    'setup_url',
    'org_id',
    'database_name',
    'username',
    'connect_as',
    'expires_at',
  ]);
  t.match(invite, {
    id: uuid,
    invite: invitePattern,
    org_id: acme,
    database_name: 'acme',
    username: 'frank',
    connect_as: app,
  });
  t.equal(invite.setup_url, `https://db.example.com/setup#invite=${invite.invite!}`);
  const seconds = (Date.parse(invite.expires_at!) - Date.now()) / 1000;
  t.ok(seconds > 50 && seconds <= 60, '--ttl 60: open for a minute');

  // bob's invite (created above) is redeemed, frank's stays open.
  const bob = (
    await db.query<{ id: string }>("select id from pgvpd_private.invites where username = 'bob'")
  ).rows[0]!.id;
  await db.query(`update pgvpd_private.invites set consumed_at = clock_timestamp() where id = $1`, [
    bob,
  ]);
  const list = await pgvpd('invite', 'list', 'acme', '--db', db.url);
  t.equal(list.code, 0);
  const lines = list.out.trimEnd().split('\n');
  t.match(lines[0], /^id +username +connect_as +state +created_at +expires_at$/);
  t.match(lines[2], new RegExp(`^${bob} +bob +${app} +consumed +`));
  t.match(lines[3], new RegExp(`^${invite.id!} +frank +${app} +open +`));
  t.equal(lines.length, 4);
  t.notMatch(list.out, /pgvpd_inv_/);

  t.same(await pgvpd('invite', 'revoke', 'acme', invite.id!, '--db', db.url), {
    code: 0,
    out: `revoked invite ${invite.id!} of org acme\n`,
    err: '',
  });
  await t.rejects(db.query('select * from pgvpd.invite_info($1)', [invite.invite]), {
    code: 'PV410',
  });
  t.same(await pgvpd('invite', 'revoke', 'acme', invite.id!, '--db', db.url), {
    code: 0,
    out: `invite ${invite.id!} of org acme was consumed or revoked already\n`,
    err: '',
  });
  t.same(await pgvpd('invite', 'revoke', 'acme', bob, '--db', db.url), {
    code: 0,
    out: `invite ${bob} of org acme was consumed or revoked already\n`,
    err: '',
  });
  const json = JSON.parse(
    (await pgvpd('invite', 'list', 'acme', '--json', '--db', db.url)).out,
  ) as {
    username: string;
    state: string;
  }[];
  t.same(
    json.map((row) => `${row.username} ${row.state}`),
    ['bob consumed', 'frank revoked'],
  );
});

t.test('invite revoke and list refuse unknown ids and orgs with the exact message', async (t) => {
  const unknown = randomUUID();
  const frank = (
    await db.query<{ id: string }>("select id from pgvpd_private.invites where username = 'frank'")
  ).rows[0]!.id;
  const cases: [string[], string][] = [
    [
      ['revoke', 'acme', unknown],
      `error: pgvpd: no invite '${unknown}' in org '${acme}' (SQLSTATE 42704)\n`,
    ],
    [
      ['revoke', 'globex', frank],
      `error: pgvpd: no invite '${frank}' in org '${globex}' (SQLSTATE 42704)\n`,
    ],
    [
      ['revoke', 'acme', 'x'],
      'error: "x" is not an invite id: ids are uuids (pgvpd invite list acme)\n',
    ],
    [
      ['revoke', 'nope', unknown],
      'error: no org "nope": name an org by its id or its database name (pgvpd org list)\n',
    ],
    [
      ['list', 'nope'],
      'error: no org "nope": name an org by its id or its database name (pgvpd org list)\n',
    ],
    [['create', 'acme', 'gina'], "error: required option '--connect-as <role>' not specified\n"],
  ];
  for (const [args, err] of cases) {
    t.same(
      await pgvpd('invite', ...args, '--db', db.url),
      { code: 1, out: '', err },
      args.join(' '),
    );
  }
});

t.test('org allow-role and disallow-role keep the list org tokens choose from', async (t) => {
  const other = await role(t, 'login nosuperuser nobypassrls');
  const allowed = async (org: string): Promise<string[]> =>
    (await db.query<{ r: string }>('select r from pgvpd.org_allowed_roles($1) r', [org])).rows.map(
      (row) => row.r,
    );
  t.same(await pgvpd('org', 'allow-role', 'acme', app, '--db', db.url), {
    code: 0,
    out: `role ${app} is now allowed for org acme's tokens\nallowed: ${app}\n`,
    err: '',
  });
  t.same(await pgvpd('org', 'allow-role', acme, app, '--db', db.url), {
    code: 0,
    out: `role ${app} was allowed already for org acme's tokens\nallowed: ${app}\n`,
    err: '',
  });
  const both = [app, other].sort();
  t.same(await pgvpd('org', 'allow-role', 'acme', other, '--db', db.url), {
    code: 0,
    out: `role ${other} is now allowed for org acme's tokens\nallowed: ${both.join(', ')}\n`,
    err: '',
  });
  t.same(await allowed(acme), both);
  t.same(await allowed(globex), [], 'another org is not touched');
  t.same(await pgvpd('org', 'disallow-role', 'acme', other, '--db', db.url), {
    code: 0,
    out: `role ${other} is no longer allowed for org acme's tokens\nallowed: ${app}\n`,
    err: '',
  });
  t.same(await pgvpd('org', 'disallow-role', 'acme', other, '--db', db.url), {
    code: 0,
    out: `role ${other} was not allowed for org acme's tokens\nallowed: ${app}\n`,
    err: '',
  });
  t.same(await pgvpd('org', 'disallow-role', 'acme', app, '--db', db.url), {
    code: 0,
    out: `role ${app} is no longer allowed for org acme's tokens\norg acme's tokens may choose no connect_as role\n`,
    err: '',
  });
  t.same(await allowed(acme), []);
});

t.test('org allow-role refuses a role check_connect_as refuses, and an unknown org', async (t) => {
  const bypass = await role(t, 'login nosuperuser bypassrls');
  t.same(await pgvpd('org', 'allow-role', 'acme', bypass, '--db', db.url), {
    code: 1,
    out: '',
    err:
      `error: pgvpd: connect_as role ${bypass} has BYPASSRLS (SQLSTATE 42501)\n` +
      'hint: connect_as roles must be LOGIN NOSUPERUSER NOBYPASSRLS and members of no such role: row-level security must apply to them\n',
  });
  t.same(await pgvpd('org', 'allow-role', 'acme', 'pgvpd_no_such_role', '--db', db.url), {
    code: 1,
    out: '',
    err:
      'error: pgvpd: connect_as role pgvpd_no_such_role does not exist (SQLSTATE 42704)\n' +
      'hint: create the role first; pgvpd never creates or drops connect_as roles\n',
  });
  t.same(await pgvpd('org', 'disallow-role', 'nope', bypass, '--db', db.url), {
    code: 1,
    out: '',
    err: 'error: no org "nope": name an org by its id or its database name (pgvpd org list)\n',
  });
  const { rows } = await db.query('select * from pgvpd_private.org_connect_as');
  t.same(rows, []);
});
