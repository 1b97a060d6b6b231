// cli/operations called directly, as an HTTP API would call them: a pg client on the catalog and
// plain objects in, plain rows and objects out, and an OperationError with a stable kind, the
// SQLSTATE when PostgreSQL raised it, and the exact message when something is refused.
import { randomBytes } from 'node:crypto';
import t, { type Test } from 'tap';
import {
  OperationError,
  addServer,
  addUser,
  createOrg,
  getOrg,
  getServer,
  getUser,
  isOrgNameAvailable,
  listOrgs,
  listServers,
  listUsers,
  planOrgPurge,
  purgeOrg,
  removeOrg,
  removeServer,
  removeUser,
  resumeOrg,
  setUserVerifier,
  showOrg,
  suspendOrg,
  type OperationErrorKind,
  type OrgRow,
} from '../../cli/operations/index.js';
import { makeVerifier, parseVerifier } from '../../proxy/auth/scram-verifier.js';
import { createTestDatabase, type TestLike } from '../support/postgres.js';
import { connect, installPgvpd } from '../support/pgvpd.js';
import { closedPort } from './run-cli.js';

const db = await createTestDatabase(t);
await installPgvpd(db);
await db.query(`
  create table public.docs (id int primary key, tenant_id uuid not null);
  select pgvpd.protect('public.docs');
`);
const catalog = await connect(db.url);
t.teardown(() => catalog.end());

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Expected {
  kind: OperationErrorKind;
  sqlstate: string | undefined;
  message: string;
  hint?: string;
}

/** Asserts that `promise` rejects with an OperationError of exactly this kind, SQLSTATE and message. */
async function refuses(t: Test, promise: Promise<unknown>, expected: Expected): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  t.type(error, OperationError);
  if (!(error instanceof OperationError)) return;
  t.equal(error.kind, expected.kind, 'kind');
  t.equal(error.sqlstate, expected.sqlstate, 'sqlstate');
  t.equal(error.message, expected.message, 'message');
  if (expected.hint !== undefined) t.equal(error.hint, expected.hint, 'hint');
}

/** A database name unique to this run (databases are cluster-wide), dropped at the test's end. */
function databaseName(t: TestLike, stem: string): string {
  const name = `pgvpd_t_ops_${stem}_${String(process.pid)}_${randomBytes(3).toString('hex')}`;
  t.teardown(async () => {
    await db.query(`drop database if exists ${name} with (force)`);
  });
  return name;
}

async function databaseExists(name: string): Promise<boolean> {
  const { rowCount } = await db.query('select 1 from pg_database where datname = $1', [name]);
  return rowCount === 1;
}

async function verifierOf(org: string, username: string): Promise<string | undefined> {
  const { rows } = await db.query<{ scram_verifier: string }>(
    'select scram_verifier from pgvpd_private.org_users where org_id = $1 and username = $2',
    [org, username],
  );
  return rows[0]?.scram_verifier;
}

const app = `pgvpd_cas_${randomBytes(4).toString('hex')}`;
await db.query(`create role ${app} login nosuperuser nobypassrls`);
t.teardown(async () => {
  await db.query(`drop owned by ${app}`).catch(() => undefined);
  await db.query(`drop role if exists ${app}`).catch(() => undefined);
});

let acme = {} as OrgRow;

t.test('listServers returns the built-in default server', async (t) => {
  t.match(await listServers(catalog), [
    { name: 'default', host: null, port: null, tls: 'disable', org_count: 0 },
  ]);
});

t.test('addServer returns the new row, with port 5432 and tls disable by default', async (t) => {
  const row = await addServer(catalog, { name: 'us-1', host: '10.0.0.7' });
  t.match(row, { name: 'us-1', host: '10.0.0.7', port: 5432, tls: 'disable', org_count: 0 });
  t.type(row.created_at, Date);
  t.match(await getServer(catalog, 'us-1'), { name: 'us-1' });
});

t.test('addServer refuses a duplicate with 23505 and a bad name with 22023', async (t) => {
  await refuses(t, addServer(catalog, { name: 'us-1', host: 'h' }), {
    kind: 'conflict',
    sqlstate: '23505',
    message: "pgvpd: server 'us-1' already exists",
  });
  await refuses(t, addServer(catalog, { name: 'EU', host: 'h' }), {
    kind: 'invalid_input',
    sqlstate: '22023',
    message: "pgvpd: invalid server name 'EU'",
    hint: 'server names match ^[a-z0-9][a-z0-9_-]{0,62}$',
  });
  await refuses(t, addServer(catalog, { name: 'x', host: 'h', port: 70000 }), {
    kind: 'invalid_input',
    sqlstate: '22023',
    message: 'pgvpd: port must be between 1 and 65535',
  });
});

t.test('getServer of an unknown server is not_found without a SQLSTATE', async (t) => {
  await refuses(t, getServer(catalog, 'nope'), {
    kind: 'not_found',
    sqlstate: undefined,
    message: 'no server "nope"',
  });
});

t.test('removeServer removes, and refuses default and unknown servers', async (t) => {
  t.same(await removeServer(catalog, 'us-1'), { name: 'us-1' });
  await refuses(t, removeServer(catalog, 'default'), {
    kind: 'invalid_input',
    sqlstate: '42939',
    message: 'pgvpd: server default is built in and cannot be removed',
  });
  await refuses(t, removeServer(catalog, 'us-1'), {
    kind: 'not_found',
    sqlstate: '42704',
    message: "pgvpd: no server 'us-1'",
  });
});

t.test('isOrgNameAvailable is true for a free name, false for reserved and invalid', async (t) => {
  t.equal(await isOrgNameAvailable(catalog, 'acme'), true);
  t.equal(await isOrgNameAvailable(catalog, 'postgres'), false);
  t.equal(await isOrgNameAvailable(catalog, 'Bad Name'), false);
});

t.test('createOrg (shared) returns the pgvpd.orgs() row, no database, no warning', async (t) => {
  const created = await createOrg(catalog, { displayName: 'Acme Inc', databaseName: 'acme' });
  t.match(created, {
    org: {
      id: uuid,
      database_name: 'acme',
      display_name: 'Acme Inc',
      status: 'active',
      placement: 'shared',
      server_name: 'default',
      target_database: db.name,
      user_count: 0,
    },
    createdDatabase: null,
    warnings: [],
  });
  acme = created.org;
  t.equal(await isOrgNameAvailable(catalog, 'acme'), false);
});

t.test('createOrg refuses taken, reserved and invalid names with their SQLSTATE', async (t) => {
  await refuses(t, createOrg(catalog, { displayName: 'Again', databaseName: 'acme' }), {
    kind: 'conflict',
    sqlstate: '23505',
    message: "pgvpd: database name 'acme' is already taken",
  });
  await refuses(t, createOrg(catalog, { displayName: 'Pg', databaseName: 'postgres' }), {
    kind: 'invalid_input',
    sqlstate: '42939',
    message: "pgvpd: database name 'postgres' is reserved",
  });
  await refuses(t, createOrg(catalog, { displayName: 'Bad', databaseName: 'Bad Name' }), {
    kind: 'invalid_input',
    sqlstate: '22023',
    message: "pgvpd: invalid database name 'Bad Name'",
    hint: 'database names match ^[a-z0-9][a-z0-9_-]{0,62}$',
  });
  await refuses(t, createOrg(catalog, { displayName: 'X', server: 'nope' }), {
    kind: 'not_found',
    sqlstate: '42704',
    message: "pgvpd: no server 'nope'",
  });
});

t.test('createOrg refuses template and serverDb for shared placement', async (t) => {
  await refuses(t, createOrg(catalog, { displayName: 'X', template: 'template1' }), {
    kind: 'invalid_input',
    sqlstate: undefined,
    message: "template is for dedicated placement: a shared org's database exists already",
  });
  await refuses(t, createOrg(catalog, { displayName: 'X', serverDb: db.url }), {
    kind: 'invalid_input',
    sqlstate: undefined,
    message: "serverDb is for dedicated placement: a shared org's database exists already",
  });
  t.equal((await listOrgs(catalog)).length, 1, 'only acme');
});

t.test('getOrg finds an org by database name, id and upper-case id', async (t) => {
  for (const ref of ['acme', acme.id, acme.id.toUpperCase()]) {
    t.same(await getOrg(catalog, ref), acme, ref);
  }
});

t.test('an unknown org is not_found, with the message that says how orgs are named', async (t) => {
  const expected: Expected = {
    kind: 'not_found',
    sqlstate: undefined,
    message: 'no org "nope": name an org by its id or its database name (pgvpd org list)',
  };
  await refuses(t, getOrg(catalog, 'nope'), expected);
  await refuses(t, showOrg(catalog, 'nope'), expected);
  await refuses(t, suspendOrg(catalog, 'nope'), expected);
  await refuses(t, removeOrg(catalog, 'nope'), expected);
  await refuses(t, listUsers(catalog, 'nope'), expected);
  await refuses(t, planOrgPurge(catalog, { org: 'nope' }), expected);
});

t.test('listOrgs returns the rows by database name', async (t) => {
  await createOrg(catalog, {
    displayName: 'Globex',
    databaseName: 'globex',
    targetDatabase: 'elsewhere',
  });
  t.match(await listOrgs(catalog), [
    { database_name: 'acme', target_database: db.name },
    { database_name: 'globex', target_database: 'elsewhere' },
  ]);
});

t.test('suspendOrg and resumeOrg return the org as it is now and whether it changed', async (t) => {
  t.match(await suspendOrg(catalog, 'acme'), { org: { status: 'suspended' }, changed: true });
  t.match(await suspendOrg(catalog, 'acme'), { org: { status: 'suspended' }, changed: false });
  t.match(await getOrg(catalog, 'acme'), { status: 'suspended' });
  t.match(await resumeOrg(catalog, 'acme'), { org: { status: 'active' }, changed: true });
  t.match(await resumeOrg(catalog, 'acme'), { org: { status: 'active' }, changed: false });
});

t.test('addUser stores the verifier given and returns the user, never a verifier', async (t) => {
  const verifier = makeVerifier('correct horse battery staple');
  const added = await addUser(catalog, {
    org: 'acme',
    username: 'alice',
    verifier,
    connectAs: app,
  });
  t.match(added, {
    org: { database_name: 'acme' },
    user: { username: 'alice', connect_as: app, created_at: Date },
  });
  t.same(Object.keys(added.user).sort(), ['connect_as', 'created_at', 'username']);
  t.equal(await verifierOf(acme.id, 'alice'), verifier);
});

t.test('addUser refuses a username the org already has, with 23505', async (t) => {
  await refuses(
    t,
    addUser(catalog, {
      org: 'acme',
      username: 'alice',
      verifier: makeVerifier('x'),
      connectAs: app,
    }),
    {
      kind: 'conflict',
      sqlstate: '23505',
      message: `pgvpd: user 'alice' already exists in org '${acme.id}'`,
    },
  );
});

t.test('addUser refuses a verifier that is not one, and a missing connect_as role', async (t) => {
  await refuses(
    t,
    addUser(catalog, { org: 'acme', username: 'bob', verifier: 'secret', connectAs: app }),
    {
      kind: 'invalid_input',
      sqlstate: '22023',
      message: 'pgvpd: verifier is not a SCRAM-SHA-256 verifier',
    },
  );
  await refuses(
    t,
    addUser(catalog, {
      org: 'acme',
      username: 'bob',
      verifier: makeVerifier('pw'),
      connectAs: 'pgvpd_no_such_role',
    }),
    {
      kind: 'not_found',
      sqlstate: '42704',
      message: 'pgvpd: connect_as role pgvpd_no_such_role does not exist',
      hint: 'create the role first; pgvpd never creates or drops connect_as roles',
    },
  );
  t.equal(await verifierOf(acme.id, 'bob'), undefined);
});

t.test('listUsers, getUser and showOrg return the org users', async (t) => {
  t.match(await listUsers(catalog, 'acme'), {
    org: { database_name: 'acme' },
    users: [{ username: 'alice', connect_as: app }],
  });
  t.match(await getUser(catalog, acme.id, 'alice'), { user: { username: 'alice' } });
  t.match(await showOrg(catalog, 'acme'), {
    database_name: 'acme',
    user_count: 1,
    users: [{ username: 'alice' }],
  });
  t.match(await listUsers(catalog, 'globex'), { users: [] });
});

t.test('getUser of an unknown user is not_found without a SQLSTATE', async (t) => {
  await refuses(t, getUser(catalog, 'acme', 'zed'), {
    kind: 'not_found',
    sqlstate: undefined,
    message: 'no user "zed" in org acme (pgvpd user list --org acme)',
  });
});

t.test('setUserVerifier replaces the verifier', async (t) => {
  const verifier = makeVerifier('a new password');
  t.match(await setUserVerifier(catalog, { org: 'acme', username: 'alice', verifier }), {
    org: { database_name: 'acme' },
    username: 'alice',
  });
  const stored = await verifierOf(acme.id, 'alice');
  t.equal(stored, verifier);
  t.ok(parseVerifier(stored!));
});

t.test('removeUser removes, and a second remove fails with 42704', async (t) => {
  t.match(await removeUser(catalog, { org: 'acme', username: 'alice' }), {
    org: { database_name: 'acme' },
    username: 'alice',
  });
  await refuses(t, removeUser(catalog, { org: 'acme', username: 'alice' }), {
    kind: 'not_found',
    sqlstate: '42704',
    message: `pgvpd: no user 'alice' in org '${acme.id}'`,
  });
});

t.test('removeOrg returns the org removed and leaves its rows', async (t) => {
  const { org } = await createOrg(catalog, { displayName: 'Initech', databaseName: 'initech' });
  await db.query('insert into public.docs values (100, $1)', [org.id]);
  t.same(await removeOrg(catalog, 'initech'), org);
  const { rows } = await db.query('select count(*)::int as n from public.docs where id = 100');
  t.same(rows, [{ n: 1 }]);
});

t.test('planOrgPurge says what a purge of a shared org does, changing nothing', async (t) => {
  t.same(await planOrgPurge(catalog, { org: 'acme' }), {
    org: await getOrg(catalog, 'acme'),
    catalogDatabase: db.name,
    dropsDatabase: null,
    warnings: [],
  });
});

t.test('purgeOrg refuses a confirmation that is not the database name', async (t) => {
  await db.query('insert into public.docs values (1, $1), (2, $1)', [acme.id]);
  await refuses(t, purgeOrg(catalog, { org: 'acme', confirmation: 'ACME' }), {
    kind: 'invalid_input',
    sqlstate: undefined,
    message: `confirmation "ACME" is not the database name of org ${acme.id}: nothing was purged`,
  });
  t.match(await getOrg(catalog, 'acme'), { status: 'active' });
});

t.test('purgeOrg deletes the rows per table and removes the org', async (t) => {
  t.match(await purgeOrg(catalog, { org: 'acme', confirmation: 'acme' }), {
    org: { database_name: 'acme' },
    catalogDatabase: db.name,
    dropsDatabase: null,
    deleted: [{ table: 'public.docs', rows: 2 }],
    database: null,
  });
  await refuses(t, getOrg(catalog, 'acme'), {
    kind: 'not_found',
    sqlstate: undefined,
    message: 'no org "acme": name an org by its id or its database name (pgvpd org list)',
  });
});

t.test('a shared org whose rows live elsewhere is not_purgeable', async (t) => {
  const expected: Expected = {
    kind: 'not_purgeable',
    sqlstate: undefined,
    message: `org globex's rows live in database elsewhere on server default, not in the catalog's database ${db.name}: pgvpd cannot purge them from here. Delete them there, then run pgvpd org remove globex`,
  };
  await refuses(t, planOrgPurge(catalog, { org: 'globex' }), expected);
  await refuses(t, purgeOrg(catalog, { org: 'globex', confirmation: 'globex' }), expected);
});

t.test(
  'createOrg (dedicated) creates the database with pgvpd, then drops it on purge',
  async (t) => {
    const name = databaseName(t, 'ded');
    const created = await createOrg(catalog, {
      displayName: 'Dedicated',
      databaseName: name.replace(/_/g, '-'),
      targetDatabase: name,
      placement: 'dedicated',
      catalogUrl: db.url,
    });
    t.match(created, {
      org: { placement: 'dedicated', server_name: 'default', target_database: name },
      createdDatabase: { name, server: 'default' },
      warnings: [],
    });
    t.ok(await databaseExists(name));
    const org = created.org.database_name;
    t.match(await planOrgPurge(catalog, { org, catalogUrl: db.url }), {
      dropsDatabase: { name, server: 'default' },
    });
    t.match(await purgeOrg(catalog, { org, confirmation: org, catalogUrl: db.url }), {
      deleted: [{ table: 'public.docs', rows: 0 }],
      database: { name, server: 'default', dropped: true },
    });
    t.notOk(await databaseExists(name));
  },
);

t.test('a dedicated org on server default needs catalogUrl or serverDb', async (t) => {
  const name = databaseName(t, 'nourl');
  await refuses(
    t,
    createOrg(catalog, { displayName: 'No URL', databaseName: name, placement: 'dedicated' }),
    {
      kind: 'server_db_required',
      sqlstate: undefined,
      message:
        "the org's database is on server default: give serverDb or catalogUrl, a superuser connection string for that server",
    },
  );
  t.notOk(await databaseExists(name));
});

t.test(
  'a server with its own address needs serverDb, and warns when it leads elsewhere',
  async (t) => {
    await addServer(catalog, { name: 'eu-1', host: 'pg-eu-1.internal', port: 6432 });
    const name = databaseName(t, 'eu');
    const input = {
      displayName: 'Euro',
      databaseName: name,
      placement: 'dedicated',
      server: 'eu-1',
    } as const;
    await refuses(t, createOrg(catalog, { ...input, catalogUrl: db.url }), {
      kind: 'server_db_required',
      sqlstate: undefined,
      message:
        "the org's database is on server eu-1 (pg-eu-1.internal:6432): pass --server-db <url>, a superuser connection string for that server",
    });
    t.notOk(await databaseExists(name));
    const created = await createOrg(catalog, { ...input, serverDb: db.url });
    const { host, port } = db.server;
    t.same(created.warnings, [
      `--server-db leads to ${host}:${String(port)}, the catalog has server eu-1 at pg-eu-1.internal:6432`,
    ]);
    t.ok(await databaseExists(name));
  },
);

t.test('an existing database is a conflict (42P04) and nothing is recorded', async (t) => {
  const before = (await listOrgs(catalog)).length;
  await refuses(
    t,
    createOrg(catalog, {
      displayName: 'Squatter',
      databaseName: 'squatter',
      targetDatabase: db.name,
      placement: 'dedicated',
      catalogUrl: db.url,
    }),
    { kind: 'conflict', sqlstate: '42P04', message: `database "${db.name}" already exists` },
  );
  t.equal((await listOrgs(catalog)).length, before);
});

t.test('an unreachable server is a connection error and nothing is recorded', async (t) => {
  const before = (await listOrgs(catalog)).length;
  const url = new URL(db.url);
  url.port = String(await closedPort());
  url.hostname = '127.0.0.1';
  const error = await createOrg(catalog, {
    displayName: 'Unreachable',
    databaseName: databaseName(t, 'unreach'),
    placement: 'dedicated',
    serverDb: url.toString(),
  }).catch((caught: unknown) => caught);
  t.type(error, OperationError);
  t.match(error, { kind: 'connection', sqlstate: undefined, message: /ECONNREFUSED/ });
  t.equal((await listOrgs(catalog)).length, before);
});

t.test('operations on a database without pgvpd are not_installed, 3F000', async (t) => {
  const bare = await createTestDatabase(t);
  const client = await connect(bare.url);
  t.teardown(() => client.end());
  await refuses(t, listOrgs(client), {
    kind: 'not_installed',
    sqlstate: '3F000',
    message: 'schema "pgvpd" does not exist',
  });
});
