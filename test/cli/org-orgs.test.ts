// pgvpd org, shared placement: create, check-name, list, show, suspend, resume, remove and purge
// against the catalog of a real database. Purge deletes data, so it is refused until the org's
// database name is typed on the terminal or given with --yes-i-mean-it.
import { PassThrough } from 'node:stream';
import t from 'tap';
import { runCli } from '../../cli/program.js';
import type { InputStream } from '../../cli/read-password.js';
import { createTestDatabase } from '../support/postgres.js';
import { installPgvpd } from '../support/pgvpd.js';
import { pgvpd, withDatabaseUrl, type CliResult } from './run-cli.js';

const db = await createTestDatabase(t);
await installPgvpd(db);
await db.query(`
  create table public.docs (id int primary key, tenant_id uuid not null);
  select pgvpd.protect('public.docs');
`);

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

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

async function create(...args: string[]): Promise<string> {
  const result = await pgvpd('org', 'create', ...args, '--db', db.url);
  if (result.code !== 0) throw new Error(`org create failed: ${result.err}`);
  return result.out.trim();
}

async function orgStatus(id: string): Promise<string | undefined> {
  const { rows } = await db.query<{ status: string }>(
    'select status from pgvpd.orgs() where id = $1',
    [id],
  );
  return rows[0]?.status;
}

async function docsOf(id: string): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    'select count(*)::int as n from public.docs where tenant_id = $1',
    [id],
  );
  return rows[0]!.n;
}

let nextDoc = 1;
async function addDocs(id: string, count: number): Promise<void> {
  for (let i = 0; i < count; i += 1) {
    await db.query('insert into public.docs values ($1, $2)', [nextDoc, id]);
    nextDoc += 1;
  }
}

t.test('org list says so when there are no orgs, in a table and in JSON', async (t) => {
  t.same(await pgvpd('org', 'list', '--db', db.url), { code: 0, out: 'no orgs\n', err: '' });
  t.same(await pgvpd('org', 'list', '--json', '--db', db.url), { code: 0, out: '[]\n', err: '' });
});

t.test('check-name prints available and exits 0 for a free name', async (t) => {
  t.same(await pgvpd('org', 'check-name', 'acme', '--db', db.url), {
    code: 0,
    out: 'available\n',
    err: '',
  });
});

t.test('check-name prints unavailable and exits 1 for reserved and invalid names', async (t) => {
  for (const name of ['postgres', 'template1', 'Acme', 'acme corp', '-acme', '']) {
    t.same(
      await pgvpd('org', 'check-name', '--db', db.url, '--', name),
      { code: 1, out: 'unavailable\n', err: '' },
      JSON.stringify(name),
    );
  }
});

let acme = '';

t.test('org create prints the new org id; the org is shared in the catalog database', async (t) => {
  const result = await pgvpd(
    'org',
    'create',
    'Acme Inc',
    '--database-name',
    'acme',
    '--db',
    db.url,
  );
  t.equal(result.code, 0);
  t.equal(result.err, '');
  t.match(result.out, /\n$/);
  acme = result.out.trim();
  t.match(acme, uuid);
  const { rows } = await db.query('select * from pgvpd.orgs() where id = $1', [acme]);
  t.match(rows, [
    {
      id: acme,
      database_name: 'acme',
      display_name: 'Acme Inc',
      status: 'active',
      placement: 'shared',
      server_name: 'default',
      target_database: db.name,
      user_count: 0,
    },
  ]);
});

t.test('check-name then says the taken name is unavailable', async (t) => {
  t.same(await pgvpd('org', 'check-name', 'acme', '--db', db.url), {
    code: 1,
    out: 'unavailable\n',
    err: '',
  });
});

t.test('org create without --database-name names the org by its id', async (t) => {
  const id = await withDatabaseUrl(db.url, () => create('Nameless'));
  t.match(id, uuid);
  const { rows } = await db.query('select database_name from pgvpd.orgs() where id = $1', [id]);
  t.same(rows, [{ database_name: id }]);
  t.same(await pgvpd('org', 'remove', id, '--db', db.url), {
    code: 0,
    out: `removed org ${id} from the catalog; its data was left alone\n`,
    err: '',
  });
});

t.test('org create refuses taken, reserved and invalid names with their SQLSTATE', async (t) => {
  t.same(await pgvpd('org', 'create', 'Again', '--database-name', 'acme', '--db', db.url), {
    code: 1,
    out: '',
    err: "error: pgvpd: database name 'acme' is already taken (SQLSTATE 23505)\n",
  });
  t.same(await pgvpd('org', 'create', 'Pg', '--database-name', 'postgres', '--db', db.url), {
    code: 1,
    out: '',
    err: "error: pgvpd: database name 'postgres' is reserved (SQLSTATE 42939)\n",
  });
  t.same(await pgvpd('org', 'create', 'Bad', '--database-name', 'Bad Name', '--db', db.url), {
    code: 1,
    out: '',
    err:
      "error: pgvpd: invalid database name 'Bad Name' (SQLSTATE 22023)\n" +
      'hint: database names match ^[a-z0-9][a-z0-9_-]{0,62}$\n',
  });
});

t.test('org create refuses an unknown server and an unknown placement', async (t) => {
  t.same(
    await pgvpd('org', 'create', 'X', '--database-name', 'x1', '--server', 'nope', '--db', db.url),
    { code: 1, out: '', err: "error: pgvpd: no server 'nope' (SQLSTATE 42704)\n" },
  );
  const result = await pgvpd('org', 'create', 'X', '--placement', 'elsewhere', '--db', db.url);
  t.equal(result.code, 1);
  t.match(result.err, /option '--placement <placement>' argument 'elsewhere' is invalid/);
});

t.test('org create refuses --template and --server-db for shared placement', async (t) => {
  t.same(await pgvpd('org', 'create', 'X', '--template', 'template1', '--db', db.url), {
    code: 1,
    out: '',
    err: "error: --template is for dedicated placement: a shared org's database exists already\n",
  });
  t.same(await pgvpd('org', 'create', 'X', '--server-db', db.url, '--db', db.url), {
    code: 1,
    out: '',
    err: "error: --server-db is for dedicated placement: a shared org's database exists already\n",
  });
  const { rows } = await db.query('select count(*)::int as n from pgvpd.orgs()');
  t.same(rows, [{ n: 1 }], 'only acme');
});

let globex = '';

t.test('org list shows every org in a table, by database name', async (t) => {
  globex = await create('Globex', '--database-name', 'globex', '--target-database', 'elsewhere');
  const result = await pgvpd('org', 'list', '--db', db.url);
  t.equal(result.code, 0);
  t.equal(result.err, '');
  const lines = result.out.split('\n').map((line) => line.split(/ {2,}/));
  t.same(lines, [
    [
      'database_name',
      'display_name',
      'status',
      'placement',
      'server',
      'target_database',
      'users',
      'id',
    ],
    lines[1],
    ['acme', 'Acme Inc', 'active', 'shared', 'default', db.name, '0', acme],
    ['globex', 'Globex', 'active', 'shared', 'default', 'elsewhere', '0', globex],
    [''],
  ]);
  t.match(lines[1]!.join(' '), /^[- ]+$/);
});

t.test('org list --json prints the pgvpd.orgs() rows', async (t) => {
  const result = await pgvpd('org', 'list', '--json', '--db', db.url);
  t.equal(result.code, 0);
  const rows = JSON.parse(result.out) as Record<string, unknown>[];
  t.match(rows, [
    { id: acme, database_name: 'acme', display_name: 'Acme Inc', target_database: db.name },
    { id: globex, database_name: 'globex', target_database: 'elsewhere' },
  ]);
  t.match(rows[0]?.created_at, /^\d{4}-\d\d-\d\dT/);
});

t.test('org show names the org by database name or id and shows its fields', async (t) => {
  const { rows } = await db.query<{ created_at: Date }>(
    'select created_at from pgvpd.orgs() where id = $1',
    [acme],
  );
  const expected = [
    `id               ${acme}`,
    'database_name    acme',
    'display_name     Acme Inc',
    'status           active',
    'placement        shared',
    'server           default',
    `target_database  ${db.name}`,
    `created_at       ${rows[0]!.created_at.toISOString()}`,
    '',
    'no users',
    '',
  ].join('\n');
  t.same(await pgvpd('org', 'show', 'acme', '--db', db.url), { code: 0, out: expected, err: '' });
  t.same(await pgvpd('org', 'show', acme, '--db', db.url), { code: 0, out: expected, err: '' });
  t.same(await pgvpd('org', 'show', acme.toUpperCase(), '--db', db.url), {
    code: 0,
    out: expected,
    err: '',
  });
});

t.test('org show --json prints the org with a users array', async (t) => {
  const result = await pgvpd('org', 'show', 'globex', '--json', '--db', db.url);
  t.equal(result.code, 0);
  t.match(JSON.parse(result.out), {
    id: globex,
    database_name: 'globex',
    status: 'active',
    user_count: 0,
    users: [],
  });
});

t.test('an unknown org is an error that says how orgs are named', async (t) => {
  for (const args of [
    ['show', 'nope'],
    ['suspend', 'nope'],
    ['resume', 'nope'],
    ['remove', 'nope'],
    ['set-pool-mode', 'nope', 'session'],
    ['purge', 'nope', '--yes-i-mean-it', 'nope'],
  ]) {
    t.same(
      await pgvpd('org', ...args, '--db', db.url),
      {
        code: 1,
        out: '',
        err: 'error: no org "nope": name an org by its id or its database name (pgvpd org list)\n',
      },
      args.join(' '),
    );
  }
});

t.test('org suspend and resume change the status, and say when it was already so', async (t) => {
  t.same(await pgvpd('org', 'suspend', 'acme', '--db', db.url), {
    code: 0,
    out: 'org acme is now suspended\n',
    err: '',
  });
  t.equal(await orgStatus(acme), 'suspended');
  t.same(await pgvpd('org', 'suspend', acme, '--db', db.url), {
    code: 0,
    out: 'org acme was suspended already\n',
    err: '',
  });
  t.same(await pgvpd('org', 'resume', 'acme', '--db', db.url), {
    code: 0,
    out: 'org acme is now active\n',
    err: '',
  });
  t.equal(await orgStatus(acme), 'active');
  t.same(await pgvpd('org', 'resume', 'acme', '--db', db.url), {
    code: 0,
    out: 'org acme was active already\n',
    err: '',
  });
});

t.test(
  'org set-pool-mode sets session or transaction pooling, and default resets it',
  async (t) => {
    const poolMode = async () =>
      (
        await db.query<{ mode: string | null }>(
          'select pool_mode as mode from pgvpd_private.orgs where id = $1',
          [acme],
        )
      ).rows[0]!.mode;
    t.equal(await poolMode(), null, 'none of its own at first');
    t.same(await pgvpd('org', 'set-pool-mode', 'acme', 'transaction', '--db', db.url), {
      code: 0,
      out: 'org acme is pooled per transaction\n',
      err: '',
    });
    t.equal(await poolMode(), 'transaction');
    t.same(await pgvpd('org', 'set-pool-mode', acme, 'session', '--db', db.url), {
      code: 0,
      out: 'org acme is pooled per session\n',
      err: '',
    });
    t.equal(await poolMode(), 'session');
    t.same(await pgvpd('org', 'set-pool-mode', 'acme', 'default', '--db', db.url), {
      code: 0,
      out: "org acme is pooled as the proxy's pool_mode setting says\n",
      err: '',
    });
    t.equal(await poolMode(), null);
    t.same(await pgvpd('org', 'set-pool-mode', 'acme', 'statement', '--db', db.url), {
      code: 1,
      out: '',
      err: "error: command-argument value 'statement' is invalid for argument 'mode'. Allowed choices are session, transaction, default.\n",
    });
    t.equal(await poolMode(), null, 'unchanged by the refused mode');
  },
);

t.test('org remove takes the org out of the catalog and leaves its rows', async (t) => {
  const id = await create('Initech', '--database-name', 'initech');
  await addDocs(id, 2);
  t.same(await pgvpd('org', 'remove', 'initech', '--db', db.url), {
    code: 0,
    out: 'removed org initech from the catalog; its data was left alone\n',
    err: '',
  });
  t.equal(await orgStatus(id), undefined);
  t.equal(await docsOf(id), 2);
});

t.test('org purge refuses without a terminal and without --yes-i-mean-it', async (t) => {
  await addDocs(acme, 3);
  t.same(await pgvpdWith(stdin('acme\n', false), 'org', 'purge', 'acme', '--db', db.url), {
    code: 1,
    out: '',
    err: 'error: purging org acme deletes its data for good: confirm on a terminal, or pass --yes-i-mean-it acme\n',
  });
  t.equal(await orgStatus(acme), 'active');
  t.equal(await docsOf(acme), 3);
});

t.test('org purge refuses --yes-i-mean-it with anything but the database name', async (t) => {
  for (const given of ['ACME', 'globex', acme, '']) {
    t.same(
      await pgvpd('org', 'purge', 'acme', '--yes-i-mean-it', given, '--db', db.url),
      {
        code: 1,
        out: '',
        err: `error: --yes-i-mean-it ${JSON.stringify(given)} is not the database name of org ${acme}: nothing was purged\n`,
      },
      given,
    );
  }
  t.equal(await docsOf(acme), 3);
});

const consequences = (name: string): string =>
  `Purging org ${name} deletes its rows in every protected table of database ${db.name} and removes it and its users from the catalog.\n` +
  `This cannot be undone. Type the org's database name (${name}) to confirm: `;

t.test('org purge on a terminal refuses a wrongly typed name, or none', async (t) => {
  for (const typed of ['acm\n', 'globex\n', '']) {
    t.same(
      await pgvpdWith(stdin(typed, true), 'org', 'purge', 'acme', '--db', db.url),
      {
        code: 1,
        out: '',
        err: consequences('acme') + 'error: that is not the database name: nothing was purged\n',
      },
      JSON.stringify(typed),
    );
  }
  t.equal(await orgStatus(acme), 'active');
  t.equal(await docsOf(acme), 3);
});

t.test(
  'org purge on a terminal deletes the org rows and the org once its name is typed',
  async (t) => {
    await addDocs(globex, 1);
    t.same(await pgvpdWith(stdin('acme\n', true), 'org', 'purge', acme, '--db', db.url), {
      code: 0,
      out: 'deleted 3 row(s) from public.docs\nremoved org acme and its users from the catalog\n',
      err: consequences('acme'),
    });
    t.equal(await orgStatus(acme), undefined);
    t.equal(await docsOf(acme), 0);
    t.equal(await docsOf(globex), 1, "another org's rows stay");
  },
);

t.test('org purge --yes-i-mean-it purges without asking', async (t) => {
  const id = await create('Hooli', '--database-name', 'hooli');
  await addDocs(id, 2);
  t.same(
    await pgvpdWith(
      stdin('', true),
      'org',
      'purge',
      'hooli',
      '--yes-i-mean-it',
      'hooli',
      '--db',
      db.url,
    ),
    {
      code: 0,
      out: 'deleted 2 row(s) from public.docs\nremoved org hooli and its users from the catalog\n',
      err: '',
    },
  );
  t.equal(await orgStatus(id), undefined);
  t.equal(await docsOf(id), 0);
});

t.test('org purge refuses a shared org whose rows live in another database', async (t) => {
  t.same(await pgvpd('org', 'purge', 'globex', '--yes-i-mean-it', 'globex', '--db', db.url), {
    code: 1,
    out: '',
    err: `error: org globex's rows live in database elsewhere on server default, not in the catalog's database ${db.name}: pgvpd cannot purge them from here. Delete them there, then run pgvpd org remove globex\n`,
  });
  t.equal(await orgStatus(globex), 'active');
  t.equal(await docsOf(globex), 1);
});

t.test('org commands on a database without pgvpd say to run setup', async (t) => {
  const bare = await createTestDatabase(t);
  t.same(await pgvpd('org', 'list', '--db', bare.url), {
    code: 1,
    out: '',
    err:
      'error: schema "pgvpd" does not exist (SQLSTATE 3F000)\n' +
      'hint: is pgvpd installed in this database? Run pgvpd setup\n',
  });
});

t.test('org subcommands explain themselves in --help', async (t) => {
  for (const [args, usage, says] of [
    [['org'], 'pgvpd org [options] [command]', /manage the orgs of org mode/],
    [['org', 'create'], 'pgvpd org create [options] <display-name>', /--placement <placement>/],
    [['org', 'list'], 'pgvpd org list [options]', /--json/],
    [['org', 'show'], 'pgvpd org show [options] <org>', /its\s+id\s+or\s+its\s+database\s+name/],
    [['org', 'suspend'], 'pgvpd org suspend [options] <org>', /refuses\s+its\s+new\s+sessions/],
    [['org', 'resume'], 'pgvpd org resume [options] <org>', /accepts\s+its\s+sessions\s+again/],
    [['org', 'remove'], 'pgvpd org remove [options] <org>', /left\s+alone/],
    [['org', 'purge'], 'pgvpd org purge [options] <org>', /--yes-i-mean-it <database-name>/],
    [['org', 'check-name'], 'pgvpd org check-name [options] <name>', /available\s+\(exit\s+0\)/],
  ] as const) {
    const result = await pgvpd(...args, '--help');
    t.equal(result.code, 0, args.join(' '));
    t.match(result.out, `Usage: ${usage}\n`);
    t.match(result.out, says);
    if (args.length > 1) t.match(result.out, /--db <url>\s+connection string of the database/);
  }
});

t.test('org commands without --db or DATABASE_URL say how to name the database', async (t) => {
  const result = await withDatabaseUrl(undefined, () => pgvpd('org', 'list'));
  t.same(result, {
    code: 1,
    out: '',
    err: 'error: no database: pass --db <url> or set DATABASE_URL\n',
  });
});
