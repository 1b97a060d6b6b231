// pgvpd user: add, passwd, list and remove an org's users. The password comes from stdin
// (--password-stdin) or the terminal, never from an argument; what reaches the catalog is a SCRAM
// verifier of that password, which this test recomputes from the password to prove it.
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import t from 'tap';
import { runCli } from '../../cli/program.js';
import type { InputStream } from '../../cli/read-password.js';
import { makeVerifier, parseVerifier } from '../../proxy/auth/scram-verifier.js';
import { createTestDatabase, type TestLike } from '../support/postgres.js';
import { backendPid, connect, installPgvpd, loginRole } from '../support/pgvpd.js';
import { pgvpd, type CliResult } from './run-cli.js';

const db = await createTestDatabase(t);
await installPgvpd(db);

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

/** stdin for a command: a terminal (isTTY) or a pipe, holding `text`. */
function stdin(text: string, tty: boolean): InputStream {
  const stream = new PassThrough() as PassThrough & InputStream;
  if (tty) {
    stream.isTTY = true;
    stream.setRawMode = () => undefined;
  }
  stream.end(text);
  return stream;
}

/** pgvpd(...args) with the given stdin. */
async function pgvpdWith(input: InputStream, ...args: string[]): Promise<CliResult> {
  const result: CliResult = { code: -1, out: '', err: '' };
  const io = {
    out: (text: string) => {
      result.out += text;
    },
    err: (text: string) => {
      result.err += text;
    },
    stdin: input,
  };
  result.code = await runCli(['node', 'pgvpd', ...args], io);
  return result;
}

/** The stored verifier of a user, or undefined when there is no such user. */
async function verifierOf(org: string, username: string): Promise<string | undefined> {
  const { rows } = await db.query<{ scram_verifier: string }>(
    'select scram_verifier from pgvpd_private.org_users where org_id = $1 and username = $2',
    [org, username],
  );
  return rows[0]?.scram_verifier;
}

/** Whether `stored` is a well-formed verifier of exactly `password`. */
function verifies(stored: string | undefined, password: string): boolean {
  const parsed = parseVerifier(stored ?? '');
  if (parsed === undefined) return false;
  const { salt, iterations } = parsed;
  return makeVerifier(password, { salt, iterations }) === stored;
}

t.test('user add --password-stdin stores a verifier of the first line of stdin', async (t) => {
  const password = 'correct horse battery staple';
  t.same(
    await pgvpdWith(
      stdin(`${password}\nnot this line\n`, false),
      'user',
      'add',
      'alice',
      '--org',
      'acme',
      '--connect-as',
      app,
      '--password-stdin',
      '--db',
      db.url,
    ),
    { code: 0, out: `added user alice to org acme, connecting as ${app}\n`, err: '' },
  );
  const stored = await verifierOf(acme, 'alice');
  t.match(stored, /^SCRAM-SHA-256\$4096:/);
  t.ok(verifies(stored, password), 'the verifier is that of the password');
  t.notOk(verifies(stored, 'not this line'));
  t.notOk(stored?.includes(password), 'the password itself is not stored');
});

t.test('user add on a terminal asks twice without echo and takes the org by id', async (t) => {
  const result = await pgvpdWith(
    stdin('s3cret!\rs3cret!\r', true),
    'user',
    'add',
    'bob',
    '--org',
    acme,
    '--connect-as',
    app,
    '--db',
    db.url,
  );
  t.same(result, {
    code: 0,
    out: `added user bob to org acme, connecting as ${app}\n`,
    err: 'Password for bob in org acme: \nPassword again: \n',
  });
  t.ok(verifies(await verifierOf(acme, 'bob'), 's3cret!'));
});

t.test('the same username may exist in another org, with its own password', async (t) => {
  const result = await pgvpdWith(
    stdin('other\n', false),
    'user',
    'add',
    'alice',
    '--org',
    'globex',
    '--connect-as',
    app,
    '--password-stdin',
    '--db',
    db.url,
  );
  t.equal(result.code, 0);
  t.ok(verifies(await verifierOf(globex, 'alice'), 'other'));
  t.ok(verifies(await verifierOf(acme, 'alice'), 'correct horse battery staple'));
});

t.test('user add refuses two different entries on the terminal and adds nobody', async (t) => {
  t.same(
    await pgvpdWith(
      stdin('one\rtwo\r', true),
      'user',
      'add',
      'carol',
      '--org',
      'acme',
      '--connect-as',
      app,
      '--db',
      db.url,
    ),
    {
      code: 1,
      out: '',
      err:
        'Password for carol in org acme: \nPassword again: \n' +
        'error: the two passwords differ: nothing was changed\n',
    },
  );
  t.equal(await verifierOf(acme, 'carol'), undefined);
});

t.test('user add refuses a piped stdin without --password-stdin, and an empty one', async (t) => {
  t.same(
    await pgvpdWith(
      stdin('pw\n', false),
      'user',
      'add',
      'carol',
      '--org',
      'acme',
      '--connect-as',
      app,
      '--db',
      db.url,
    ),
    {
      code: 1,
      out: '',
      err: 'error: stdin is not a terminal, so the password cannot be typed: pass --password-stdin and write the password as the first line of stdin\n',
    },
  );
  t.same(
    await pgvpdWith(
      stdin('', false),
      'user',
      'add',
      'carol',
      '--org',
      'acme',
      '--connect-as',
      app,
      '--password-stdin',
      '--db',
      db.url,
    ),
    {
      code: 1,
      out: '',
      err: 'error: no password: --password-stdin reads it from the first line of stdin\n',
    },
  );
  t.equal(await verifierOf(acme, 'carol'), undefined);
});

t.test('a password is never accepted as an argument', async (t) => {
  for (const flag of ['--password', '-p', '--password=pw']) {
    const result = await pgvpdWith(
      stdin('', false),
      'user',
      'add',
      'carol',
      '--org',
      'acme',
      '--connect-as',
      app,
      flag,
      'pw',
      '--db',
      db.url,
    );
    t.equal(result.code, 1, flag);
    t.match(result.err, /^error: unknown option '-/, flag);
  }
  t.equal(await verifierOf(acme, 'carol'), undefined);
});

t.test('user add surfaces the SQL refusal of a connect_as role, SQLSTATE and hint', async (t) => {
  const bypass = await role(t, 'login nosuperuser bypassrls');
  const nologin = await role(t, 'nologin');
  const cases: [string, string][] = [
    [
      'pgvpd_no_such_role',
      'error: pgvpd: connect_as role pgvpd_no_such_role does not exist (SQLSTATE 42704)\n' +
        'hint: create the role first; pgvpd never creates or drops connect_as roles\n',
    ],
    [
      bypass,
      `error: pgvpd: connect_as role ${bypass} has BYPASSRLS (SQLSTATE 42501)\n` +
        'hint: connect_as roles must be LOGIN NOSUPERUSER NOBYPASSRLS and members of no such role: row-level security must apply to them\n',
    ],
    [
      nologin,
      `error: pgvpd: connect_as role ${nologin} cannot log in (SQLSTATE 22023)\n` +
        `hint: alter role ${nologin} login\n`,
    ],
    [
      'pgvpd_admin',
      'error: pgvpd: connect_as role pgvpd_admin cannot log in (SQLSTATE 22023)\n' +
        'hint: alter role pgvpd_admin login\n',
    ],
  ];
  for (const [connectAs, err] of cases) {
    t.same(
      await pgvpdWith(
        stdin('pw\n', false),
        'user',
        'add',
        'dave',
        '--org',
        'acme',
        '--connect-as',
        connectAs,
        '--password-stdin',
        '--db',
        db.url,
      ),
      { code: 1, out: '', err },
      connectAs,
    );
  }
  t.equal(await verifierOf(acme, 'dave'), undefined);
});

t.test('user add refuses a username the org already has, with 23505', async (t) => {
  t.same(
    await pgvpdWith(
      stdin('pw\n', false),
      'user',
      'add',
      'alice',
      '--org',
      'acme',
      '--connect-as',
      app,
      '--password-stdin',
      '--db',
      db.url,
    ),
    {
      code: 1,
      out: '',
      err: `error: pgvpd: user 'alice' already exists in org '${acme}' (SQLSTATE 23505)\n`,
    },
  );
  t.ok(verifies(await verifierOf(acme, 'alice'), 'correct horse battery staple'), 'unchanged');
});

t.test('user list shows the users of one org, in a table and in JSON', async (t) => {
  const result = await pgvpd('user', 'list', '--org', 'acme', '--db', db.url);
  t.equal(result.code, 0);
  t.equal(result.err, '');
  const lines = result.out.split('\n').map((line) => line.split(/ {2,}/));
  t.same(
    lines.map((line) => line.slice(0, 2)),
    [['username', 'connect_as'], lines[1]!.slice(0, 2), ['alice', app], ['bob', app], ['']],
  );
  t.equal(lines[0]![2], 'created_at');
  t.match(lines[2]![2], /^\d{4}-\d\d-\d\dT[\d:.]+Z$/);

  const json = await pgvpd('user', 'list', '--org', globex, '--json', '--db', db.url);
  t.equal(json.code, 0);
  const rows = JSON.parse(json.out) as Record<string, unknown>[];
  t.match(rows, [{ username: 'alice', connect_as: app, created_at: /^\d{4}-/ }]);
  t.notOk('scram_verifier' in rows[0]! || 'verifier' in rows[0]!, 'no verifier is shown');
});

t.test('org show lists the org users', async (t) => {
  const result = await pgvpd('org', 'show', 'acme', '--db', db.url);
  t.equal(result.code, 0);
  t.match(
    result.out,
    new RegExp(`\\nusers\\nusername  connect_as\\s+created_at\\n-+  -+  -+\\nalice     ${app}  `),
  );
  const json = await pgvpd('org', 'show', 'acme', '--json', '--db', db.url);
  t.match(JSON.parse(json.out), {
    user_count: 2,
    users: [{ username: 'alice' }, { username: 'bob' }],
  });
});

t.test('user passwd --password-stdin replaces the verifier, with a new salt', async (t) => {
  const before = await verifierOf(acme, 'alice');
  t.same(
    await pgvpdWith(
      stdin('a new password\n', false),
      'user',
      'passwd',
      'alice',
      '--org',
      'acme',
      '--password-stdin',
      '--db',
      db.url,
    ),
    { code: 0, out: 'changed the password of user alice in org acme\n', err: '' },
  );
  const after = await verifierOf(acme, 'alice');
  t.ok(verifies(after, 'a new password'));
  t.notOk(verifies(after, 'correct horse battery staple'));
  t.not(
    parseVerifier(after!)?.salt.toString('base64'),
    parseVerifier(before!)?.salt.toString('base64'),
  );
  t.ok(verifies(await verifierOf(globex, 'alice'), 'other'), "the other org's alice is untouched");
});

t.test('user passwd on a terminal asks twice', async (t) => {
  t.same(
    await pgvpdWith(
      stdin('typed\rtyped\r', true),
      'user',
      'passwd',
      'bob',
      '--org',
      'acme',
      '--db',
      db.url,
    ),
    {
      code: 0,
      out: 'changed the password of user bob in org acme\n',
      err: 'Password for bob in org acme: \nPassword again: \n',
    },
  );
  t.ok(verifies(await verifierOf(acme, 'bob'), 'typed'));
});

t.test('user passwd of an unknown user fails before asking for a password', async (t) => {
  t.same(
    await pgvpdWith(
      stdin('pw\rpw\r', true),
      'user',
      'passwd',
      'zed',
      '--org',
      'acme',
      '--db',
      db.url,
    ),
    {
      code: 1,
      out: '',
      err: 'error: no user "zed" in org acme (pgvpd user list --org acme)\n',
    },
  );
});

t.test('user remove removes the user, and a second remove fails with 42704', async (t) => {
  t.same(await pgvpd('user', 'remove', 'bob', '--org', 'acme', '--db', db.url), {
    code: 0,
    out: 'removed user bob from org acme\n',
    err: '',
  });
  t.equal(await verifierOf(acme, 'bob'), undefined);
  t.same(await pgvpd('user', 'remove', 'bob', '--org', 'acme', '--db', db.url), {
    code: 1,
    out: '',
    err: `error: pgvpd: no user 'bob' in org '${acme}' (SQLSTATE 42704)\n`,
  });
});

t.test('user list says so when an org has no users', async (t) => {
  await pgvpd('user', 'remove', 'alice', '--org', 'globex', '--db', db.url);
  t.same(await pgvpd('user', 'list', '--org', 'globex', '--db', db.url), {
    code: 0,
    out: 'no users in org globex\n',
    err: '',
  });
  t.same(await pgvpd('user', 'list', '--org', 'globex', '--json', '--db', db.url), {
    code: 0,
    out: '[]\n',
    err: '',
  });
});

t.test('user commands need --org, and an org that exists', async (t) => {
  t.same(await pgvpd('user', 'list', '--db', db.url), {
    code: 1,
    out: '',
    err: "error: required option '--org <org>' not specified\n",
  });
  t.same(await pgvpd('user', 'add', 'x', '--org', 'acme', '--db', db.url), {
    code: 1,
    out: '',
    err: "error: required option '--connect-as <role>' not specified\n",
  });
  t.same(
    await pgvpdWith(
      stdin('pw\n', false),
      'user',
      'add',
      'x',
      '--org',
      'initech',
      '--connect-as',
      app,
      '--password-stdin',
      '--db',
      db.url,
    ),
    {
      code: 1,
      out: '',
      err: 'error: no org "initech": name an org by its id or its database name (pgvpd org list)\n',
    },
  );
});

t.test('user subcommands explain themselves in --help', async (t) => {
  for (const [args, usage, says] of [
    [['user'], 'pgvpd user [options] [command]', /never\s+sent\s+or\s+stored/],
    [['user', 'add'], 'pgvpd user add [options] <username>', /--password-stdin/],
    [['user', 'passwd'], 'pgvpd user passwd [options] <username>', /--password-stdin/],
    [['user', 'list'], 'pgvpd user list [options]', /--org <org>/],
    [['user', 'remove'], 'pgvpd user remove [options] <username>', /--org <org>/],
  ] as const) {
    const result = await pgvpd(...args, '--help');
    t.equal(result.code, 0, args.join(' '));
    t.match(result.out, `Usage: ${usage}\n`);
    t.match(result.out, says);
  }
});

t.test(
  "a connect_as role added with user add after protect reads its org's rows, and only those",
  async (t) => {
    const password = randomBytes(9).toString('hex');
    const customer = await role(t, `login password '${password}' nosuperuser nobypassrls`);
    const org = (await db.query<{ id: string }>("select pgvpd.org_create('Hooli', 'hooli') as id"))
      .rows[0]!.id;
    await db.query(`
    create table public.tickets (id serial primary key, org_id uuid not null, title text);
    insert into public.tickets (org_id, title) values ('${org}', 'hooli 1'), ('${globex}', 'globex 1');
    select pgvpd.protect('public.tickets', 'org_id')`);
    t.teardown(() => db.query('drop table public.tickets'));
    t.same(
      await pgvpdWith(
        stdin('pw\n', false),
        'user',
        'add',
        'gavin',
        '--org',
        'hooli',
        '--connect-as',
        customer,
        '--password-stdin',
        '--db',
        db.url,
      ),
      { code: 0, out: `added user gavin to org hooli, connecting as ${customer}\n`, err: '' },
    );
    const proxyRole = await loginRole(t, db, 'proxy');
    const proxy = await proxyRole.connect();
    t.teardown(() => proxy.end());
    const client = await connect(db.urlFor(customer, password));
    t.teardown(() => client.end());
    const { rows } = await proxy.query<{ token: string }>(
      'select pgvpd.issue_org_context($1, $2, $3) as token',
      [await backendPid(client), org, 'gavin'],
    );
    await client.query('select pgvpd.set_context($1)', [rows[0]!.token]);
    t.same((await client.query('select title from public.tickets order by id')).rows, [
      { title: 'hooli 1' },
    ]);
    t.same(
      (await db.query(`select object from pgvpd.lint() where check_name = 'role_missing_grants'`))
        .rows,
      [],
      'lint finds no role without its grants',
    );
  },
);
