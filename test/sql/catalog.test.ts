// The org catalog (migration 000005): servers, reserved names, orgs, org users and their connect_as
// roles, the proxy's snapshot, and who may call what.
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import type pg from 'pg';
import t, { type Test } from 'tap';
import { createTestDatabase } from '../support/postgres.js';
import { connect, contextPath, installPgvpd, lintLines, loginRole } from '../support/pgvpd.js';

const db = await createTestDatabase(t);
await installPgvpd(db);
const adminRole = await loginRole(t, db, 'admin');
const admin = await adminRole.connect();
t.teardown(() => admin.end());
const proxyRole = await loginRole(t, db, 'proxy');
const proxy = await proxyRole.connect();
t.teardown(() => proxy.end());
const app = await loginRole(t, db, 'app');
const appClient = await app.connect();
t.teardown(() => appClient.end());

/** A verifier in PostgreSQL's rolpassword format, computed as RFC 5802 says. */
function scramVerifier(password: string, iterations = 4096): string {
  const salt = randomBytes(16);
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const storedKey = createHash('sha256')
    .update(createHmac('sha256', salted).update('Client Key').digest())
    .digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

interface Failure {
  code: string;
  message: string;
}

/** The SQLSTATE and message of a failed query, or code 'no error'. */
async function failure(promise: Promise<unknown>): Promise<Failure> {
  try {
    await promise;
    return { code: 'no error', message: '' };
  } catch (error) {
    const { code, message } = error as { code?: string; message: string };
    return { code: code ?? '?', message };
  }
}

async function one<R extends pg.QueryResultRow>(
  client: pg.Client,
  sql: string,
  params: unknown[] = [],
): Promise<R> {
  return (await client.query<R>(sql, params)).rows[0]!;
}

/** A role of this test (roles are cluster-wide), dropped at teardown. */
async function role(t: Test, options: string): Promise<string> {
  const name = `cat_${randomBytes(4).toString('hex')}`;
  await db.query(`create role ${name} ${options}`);
  t.teardown(async () => {
    await db.query(`drop owned by ${name}`).catch(() => undefined);
    await db.query(`drop role if exists ${name}`).catch(() => undefined);
  });
  return name;
}

let orgSequence = 0;
/** A shared org with a database name unique to this file. */
async function org(name?: string): Promise<{ id: string; name: string }> {
  orgSequence += 1;
  const databaseName = name ?? `org-${String(orgSequence)}-${randomBytes(3).toString('hex')}`;
  const { id } = await one<{ id: string }>(admin, 'select pgvpd.org_create($1, $2) as id', [
    `Org ${databaseName}`,
    databaseName,
  ]);
  return { id, name: databaseName };
}

async function appRoles(): Promise<string[]> {
  const { rows } = await db.query<{ r: string }>('select r from pgvpd.app_roles() r');
  return rows.map((row) => row.r);
}

t.test('servers', (t) => {
  t.test('the built-in server default has no address of its own', async (t) => {
    const { rows } = await admin.query(
      `select name, host, port, tls from pgvpd.servers() where name = 'default'`,
    );
    t.same(rows, [{ name: 'default', host: null, port: null, tls: 'disable' }]);
  });

  t.test('server_add records a server and servers() lists it with its org count', async (t) => {
    await admin.query(`select pgvpd.server_add('eu-1', 'db-eu-1.internal', 6432, 'verify-full')`);
    await admin.query(`select pgvpd.server_add('eu-2', 'db-eu-2.internal')`);
    await admin.query(`select pgvpd.org_create('On eu-2', 'on-eu-2', 'shared', 'eu-2', 'shared_eu')`);
    const { rows } = await admin.query(
      `select name, host, port, tls, org_count from pgvpd.servers() where name like 'eu-%' order by name`,
    );
    t.same(rows, [
      { name: 'eu-1', host: 'db-eu-1.internal', port: 6432, tls: 'verify-full', org_count: 0 },
      { name: 'eu-2', host: 'db-eu-2.internal', port: 5432, tls: 'disable', org_count: 1 },
    ]);
  });

  const refusals: [string, string, Failure][] = [
    [
      'an invalid name',
      `select pgvpd.server_add('EU', 'h', 5432)`,
      { code: '22023', message: `pgvpd: invalid server name 'EU'` },
    ],
    [
      'a host with a space',
      `select pgvpd.server_add('s-host', 'a b', 5432)`,
      {
        code: '22023',
        message: 'pgvpd: host must be 1 to 255 characters without spaces or control characters',
      },
    ],
    [
      'port 0',
      `select pgvpd.server_add('s-port', 'h', 0)`,
      { code: '22023', message: 'pgvpd: port must be between 1 and 65535' },
    ],
    [
      'an unknown tls mode',
      `select pgvpd.server_add('s-tls', 'h', 5432, 'prefer')`,
      { code: '22023', message: 'pgvpd: tls must be disable, require or verify-full' },
    ],
    [
      'the name default',
      `select pgvpd.server_add('default', 'h', 5432)`,
      { code: '23505', message: `pgvpd: server 'default' already exists` },
    ],
    [
      'a taken name',
      `select pgvpd.server_add('eu-1', 'h', 5432)`,
      { code: '23505', message: `pgvpd: server 'eu-1' already exists` },
    ],
  ];
  for (const [what, sql, expected] of refusals) {
    t.test(`server_add refuses ${what}`, async (t) => {
      t.same(await failure(admin.query(sql)), expected);
    });
  }

  t.test(
    'server_remove refuses default, unknown servers and servers that hold orgs',
    async (t) => {
      t.same(await failure(admin.query(`select pgvpd.server_remove('default')`)), {
        code: '42939',
        message: 'pgvpd: server default is built in and cannot be removed',
      });
      t.same(await failure(admin.query(`select pgvpd.server_remove('nowhere')`)), {
        code: '42704',
        message: `pgvpd: no server 'nowhere'`,
      });
      t.same(await failure(admin.query(`select pgvpd.server_remove('eu-2')`)), {
        code: '55006',
        message: `pgvpd: server 'eu-2' still holds 1 org(s)`,
      });
      await admin.query(`select pgvpd.org_remove(pgvpd.org_id('on-eu-2'))`);
      await admin.query(`select pgvpd.server_remove('eu-2')`);
      const { rows } = await admin.query(`select name from pgvpd.servers() where name = 'eu-2'`);
      t.same(rows, [], 'removed once empty');
    },
  );
  t.end();
});

t.test('reserved names', (t) => {
  t.test('are seeded with PostgreSQL and pgvpd names', async (t) => {
    const { rows } = await admin.query('select n from pgvpd.reserved_names() n');
    t.same(
      rows.map((r) => r.n),
      ['admin', 'pgvpd', 'postgres', 'root', 'template0', 'template1'],
    );
  });

  t.test('can be added and removed, and a reserved name cannot be taken', async (t) => {
    t.equal((await one(admin, `select pgvpd.reserved_name_add('billing') as r`)).r, true);
    t.equal((await one(admin, `select pgvpd.reserved_name_add('billing') as r`)).r, false);
    t.same(await failure(admin.query(`select pgvpd.org_create('B', 'billing')`)), {
      code: '42939',
      message: `pgvpd: database name 'billing' is reserved`,
    });
    t.equal((await one(admin, `select pgvpd.reserved_name_remove('billing') as r`)).r, true);
    t.equal((await one(admin, `select pgvpd.reserved_name_remove('billing') as r`)).r, false);
    t.equal((await one(admin, `select pgvpd.org_name_available('billing') as r`)).r, true);
  });

  t.test('reserved_name_add refuses invalid names and names an org uses', async (t) => {
    const taken = await org();
    t.same(await failure(admin.query(`select pgvpd.reserved_name_add('Not Valid')`)), {
      code: '22023',
      message: `pgvpd: invalid database name 'Not Valid'`,
    });
    t.same(await failure(admin.query('select pgvpd.reserved_name_add($1)', [taken.name])), {
      code: '23505',
      message: `pgvpd: database name '${taken.name}' is already taken by org ${taken.id}`,
    });
  });
  t.end();
});

t.test('orgs', (t) => {
  t.test('org_create defaults the database name to the id and places it here', async (t) => {
    const { id } = await one<{ id: string }>(admin, `select pgvpd.org_create('Acme') as id`);
    const { rows } = await admin.query('select * from pgvpd.orgs() where id = $1', [id]);
    t.match(rows, [
      {
        id,
        database_name: id,
        display_name: 'Acme',
        status: 'active',
        placement: 'shared',
        server_name: 'default',
        target_database: db.name,
        user_count: 0,
      },
    ]);
    t.equal((await one(admin, 'select pgvpd.org_id($1) as id', [id])).id, id, 'org_id finds it');
  });

  t.test('org_name_available is false for invalid, reserved and taken names', async (t) => {
    const taken = await org();
    const cases: [string | null, boolean][] = [
      ['free-name_1', true],
      ['9lives', true],
      [taken.name, false],
      ['postgres', false],
      ['template1', false],
      ['Upper', false],
      ['-dash-first', false],
      ['has space', false],
      ['a'.repeat(63), true],
      ['a'.repeat(64), false],
      ['', false],
      [null, false],
    ];
    for (const [name, available] of cases) {
      const { r } = await one(admin, 'select pgvpd.org_name_available($1) as r', [name]);
      t.equal(r, available, `${JSON.stringify(name)} is ${available ? '' : 'not '}available`);
    }
  });

  t.test('org_create refuses invalid, reserved and taken names with their own SQLSTATE', async (t) => {
    const taken = await org();
    const cases: [string, Failure][] = [
      ['Acme', { code: '22023', message: `pgvpd: invalid database name 'Acme'` }],
      ['_acme', { code: '22023', message: `pgvpd: invalid database name '_acme'` }],
      ['', { code: '22023', message: `pgvpd: invalid database name ''` }],
      ['a;b', { code: '22023', message: `pgvpd: invalid database name 'a;b'` }],
      ['template0', { code: '42939', message: `pgvpd: database name 'template0' is reserved` }],
      ['root', { code: '42939', message: `pgvpd: database name 'root' is reserved` }],
      [
        taken.name,
        { code: '23505', message: `pgvpd: database name '${taken.name}' is already taken` },
      ],
    ];
    for (const [name, expected] of cases) {
      t.same(
        await failure(admin.query(`select pgvpd.org_create('x', $1)`, [name])),
        expected,
        JSON.stringify(name),
      );
    }
  });

  t.test('org_create refuses a bad display name, placement, server or database', async (t) => {
    const cases: [string, unknown[], Failure][] = [
      [
        'a display name with a newline',
        ['a\nb', 'dn-1'],
        {
          code: '22023',
          message: 'pgvpd: display name must be 1 to 255 characters without control characters',
        },
      ],
      [
        'an unknown placement',
        ['x', 'pl-1', 'pooled'],
        { code: '22023', message: 'pgvpd: placement must be shared or dedicated' },
      ],
      [
        'an unknown server',
        ['x', 'sv-1', 'shared', 'mars'],
        { code: '42704', message: `pgvpd: no server 'mars'` },
      ],
      [
        'a target database too long',
        ['x', 'tg-1', 'shared', 'default', 'd'.repeat(64)],
        {
          code: '22023',
          message: 'pgvpd: target database must be 1 to 63 bytes without control characters',
        },
      ],
      [
        'dedicating the postgres database',
        ['x', 'tg-2', 'dedicated', 'default', 'postgres'],
        { code: '42939', message: `pgvpd: database 'postgres' cannot be dedicated to an org` },
      ],
    ];
    for (const [what, args, expected] of cases) {
      const placeholders = args.map((_, i) => `$${String(i + 1)}`).join(', ');
      t.same(
        await failure(admin.query(`select pgvpd.org_create(${placeholders})`, args)),
        expected,
        what,
      );
    }
  });

  t.test('a dedicated org gets a database of its own, named like it by default', async (t) => {
    const { id } = await one<{ id: string }>(
      admin,
      `select pgvpd.org_create('Big', 'big-co', 'dedicated') as id`,
    );
    t.match(await one(admin, 'select * from pgvpd.orgs() where id = $1', [id]), {
      placement: 'dedicated',
      server_name: 'default',
      target_database: 'big-co',
    });
    const inUse = { code: '23505', message: `pgvpd: database 'big-co' on server 'default' is already in use by org 'big-co'` };
    t.same(
      await failure(admin.query(`select pgvpd.org_create('x', 'big-2', 'dedicated', 'default', 'big-co')`)),
      inUse,
      'another dedicated org',
    );
    t.same(
      await failure(admin.query(`select pgvpd.org_create('x', 'big-3', 'shared', 'default', 'big-co')`)),
      inUse,
      'a shared org',
    );
    await org();
    const result = await failure(
      admin.query(`select pgvpd.org_create('x', 'big-4', 'dedicated', 'default', $1)`, [db.name]),
    );
    t.equal(result.code, '23505', 'a database that orgs share');
    t.match(
      result.message,
      new RegExp(`^pgvpd: database '${db.name}' on server 'default' is already in use by org '[a-z0-9-]+'$`),
    );
  });

  t.test('org_suspend and org_resume change the status and say whether it changed', async (t) => {
    const { id } = await org();
    const status = async () =>
      (await one(admin, 'select status from pgvpd.orgs() where id = $1', [id])).status;
    t.equal((await one(admin, 'select pgvpd.org_suspend($1) as r', [id])).r, true);
    t.equal(await status(), 'suspended');
    t.equal((await one(admin, 'select pgvpd.org_suspend($1) as r', [id])).r, false);
    t.equal((await one(admin, 'select pgvpd.org_resume($1) as r', [id])).r, true);
    t.equal(await status(), 'active');
    const unknown = '00000000-0000-0000-0000-000000000000';
    for (const fn of ['org_suspend', 'org_resume', 'org_remove', 'org_users']) {
      t.same(
        await failure(admin.query(`select pgvpd.${fn}($1)`, [unknown])),
        { code: '42704', message: `pgvpd: no org '${unknown}'` },
        fn,
      );
    }
    t.same(await failure(admin.query(`select pgvpd.org_id('no-such-org')`)), {
      code: '42704',
      message: `pgvpd: no org with database name 'no-such-org'`,
    });
  });
  t.end();
});

t.test('org users', (t) => {
  t.test('user_add keeps a verifier that org_users never shows', async (t) => {
    const a = await org();
    const b = await org();
    const verifier = scramVerifier('secret');
    await admin.query('select pgvpd.user_add($1, $2, $3, $4)', [a.id, 'alice', verifier, app.name]);
    await admin.query('select pgvpd.user_add($1, $2, $3, $4)', [b.id, 'alice', scramVerifier('other'), app.name]);
    await admin.query('select pgvpd.user_add($1, $2, $3, $4)', [a.id, 'Bob Smith', scramVerifier('x'), app.name]);
    const { rows } = await admin.query('select * from pgvpd.org_users($1)', [a.id]);
    t.same(
      rows.map((r) => [r.username, r.connect_as]),
      [
        ['Bob Smith', app.name],
        ['alice', app.name],
      ],
    );
    t.same(Object.keys(rows[0]), ['username', 'connect_as', 'created_at'], 'no verifier column');
    t.equal((await one(admin, 'select user_count from pgvpd.orgs() where id = $1', [a.id])).user_count, 2);
    t.equal((await one(admin, 'select user_count from pgvpd.orgs() where id = $1', [b.id])).user_count, 1, 'alice of another org is another user');
    t.same(await failure(admin.query('select pgvpd.user_add($1, $2, $3, $4)', [a.id, 'alice', verifier, app.name])), {
      code: '23505',
      message: `pgvpd: user 'alice' already exists in org '${a.id}'`,
    });
  });

  t.test('user_add accepts the verifier PostgreSQL itself stores for a role', async (t) => {
    const { id } = await org();
    const source = await role(t, `login password 'pw-from-postgres'`);
    const { rolpassword } = (
      await db.query<{ rolpassword: string }>('select rolpassword from pg_authid where rolname = $1', [source])
    ).rows[0]!;
    t.match(rolpassword, /^SCRAM-SHA-256\$/);
    await admin.query('select pgvpd.user_add($1, $2, $3, $4)', [id, 'pg', rolpassword, app.name]);
    t.pass('accepted');
  });

  t.test('user_add refuses a bad username or verifier without echoing the verifier', async (t) => {
    const { id } = await org();
    const good = scramVerifier('pw');
    const badVerifier = {
      code: '22023',
      message: 'pgvpd: verifier is not a SCRAM-SHA-256 verifier',
    };
    const cases: [string, string | null, string | null, Failure][] = [
      ['an empty username', '', good, { code: '22023', message: 'pgvpd: username must be 1 to 63 characters without control characters' }],
      ['a 64-character username', 'u'.repeat(64), good, { code: '22023', message: 'pgvpd: username must be 1 to 63 characters without control characters' }],
      ['a username with a tab', 'a\tb', good, { code: '22023', message: 'pgvpd: username must be 1 to 63 characters without control characters' }],
      ['a plaintext password', 'u1', 'hunter2', badVerifier],
      ['an md5 hash', 'u2', 'md5' + 'a'.repeat(32), badVerifier],
      ['a verifier with a short key', 'u3', good.replace(/:[^:$]+$/, ':AAAA'), badVerifier],
      ['a verifier of another mechanism', 'u4', good.replace('SCRAM-SHA-256', 'SCRAM-SHA-1'), badVerifier],
      ['no verifier', 'u5', null, badVerifier],
    ];
    for (const [what, username, verifier, expected] of cases) {
      const result = await failure(
        admin.query('select pgvpd.user_add($1, $2, $3, $4)', [id, username, verifier, app.name]),
      );
      t.same(result, expected, what);
      if (verifier !== null && verifier.length > 0) t.notOk(result.message.includes(verifier), `${what}: not echoed`);
    }
    t.same(
      await failure(admin.query('select pgvpd.user_add($1, $2, $3, $4)', ['00000000-0000-0000-0000-000000000001', 'u', good, app.name])),
      { code: '42704', message: `pgvpd: no org '00000000-0000-0000-0000-000000000001'` },
    );
  });

  t.test('user_set_verifier, user_set_connect_as and user_remove change one user', async (t) => {
    const { id } = await org();
    const other = await role(t, 'login nosuperuser nobypassrls');
    await admin.query('select pgvpd.user_add($1, $2, $3, $4)', [id, 'carol', scramVerifier('one'), app.name]);
    const verifier = scramVerifier('two');
    await admin.query('select pgvpd.user_set_verifier($1, $2, $3)', [id, 'carol', verifier]);
    const stored = async () =>
      (await one(proxy, `select u from jsonb_array_elements(pgvpd.catalog_snapshot() -> 'users') u where u ->> 'org_id' = $1`, [id])).u;
    t.equal((await stored()).verifier, verifier);
    await admin.query('select pgvpd.user_set_connect_as($1, $2, $3)', [id, 'carol', other]);
    t.equal((await stored()).connect_as, other);
    t.same(await failure(admin.query('select pgvpd.user_set_verifier($1, $2, $3)', [id, 'carol', 'plain'])), {
      code: '22023',
      message: 'pgvpd: verifier is not a SCRAM-SHA-256 verifier',
    });
    for (const [fn, args] of [
      ['user_set_verifier', [verifier]],
      ['user_set_connect_as', [other]],
      ['user_remove', []],
    ] as const) {
      const placeholders = ['$1', '$2', ...args.map((_, i) => `$${String(i + 3)}`)].join(', ');
      t.same(
        await failure(admin.query(`select pgvpd.${fn}(${placeholders})`, [id, 'dave', ...args])),
        { code: '42704', message: `pgvpd: no user 'dave' in org '${id}'` },
        `${fn} of an unknown user`,
      );
    }
    await admin.query('select pgvpd.user_remove($1, $2)', [id, 'carol']);
    t.same((await admin.query('select * from pgvpd.org_users($1)', [id])).rows, []);
  });
  t.end();
});

t.test('connect_as roles', (t) => {
  t.test('each unsafe role is refused with a message naming it and the problem', async (t) => {
    const { id } = await org();
    const missing = `cat_missing_${randomBytes(3).toString('hex')}`;
    const nologin = await role(t, 'nologin');
    const superuser = await role(t, 'login superuser');
    const bypass = await role(t, 'login bypassrls');
    const bypassGroup = await role(t, 'nologin bypassrls');
    const middle = await role(t, `nologin in role ${bypassGroup}`);
    const viaBypass = await role(t, `login noinherit in role ${middle}`);
    const superGroup = await role(t, 'nologin superuser');
    const viaSuper = await role(t, `login in role ${superGroup}`);
    const viaAdmin = await role(t, 'login in role pgvpd_admin');
    const viaApi = await role(t, 'login noinherit in role pgvpd_api');
    const hint = 'connect_as roles must be LOGIN NOSUPERUSER NOBYPASSRLS and members of no such role: row-level security must apply to them';
    const cases: [string, string, Failure & { hint?: string }][] = [
      ['a missing role', missing, { code: '42704', message: `pgvpd: connect_as role ${missing} does not exist` }],
      ['a role that cannot log in', nologin, { code: '22023', message: `pgvpd: connect_as role ${nologin} cannot log in` }],
      ['a superuser', superuser, { code: '42501', message: `pgvpd: connect_as role ${superuser} is a superuser`, hint }],
      ['a BYPASSRLS role', bypass, { code: '42501', message: `pgvpd: connect_as role ${bypass} has BYPASSRLS`, hint }],
      [
        'a member, through another role, of a BYPASSRLS role',
        viaBypass,
        { code: '42501', message: `pgvpd: connect_as role ${viaBypass} is a member of ${bypassGroup}, which has BYPASSRLS`, hint },
      ],
      [
        'a member of a superuser role',
        viaSuper,
        { code: '42501', message: `pgvpd: connect_as role ${viaSuper} is a member of ${superGroup}, which is a superuser`, hint },
      ],
      [
        'a member of pgvpd_admin',
        viaAdmin,
        { code: '42501', message: `pgvpd: connect_as role ${viaAdmin} is a member of pgvpd_admin, which is one of pgvpd's own roles`, hint },
      ],
      [
        'pgvpd_proxy itself',
        'pgvpd_proxy',
        { code: '42501', message: `pgvpd: connect_as role pgvpd_proxy is one of pgvpd's own roles`, hint },
      ],
      [
        'a member of pgvpd_api, even without inheriting its privileges',
        viaApi,
        { code: '42501', message: `pgvpd: connect_as role ${viaApi} is a member of pgvpd_api, which is one of pgvpd's own roles`, hint },
      ],
      ['pgvpd_api itself, NOLOGIN as setup makes it', 'pgvpd_api', { code: '22023', message: 'pgvpd: connect_as role pgvpd_api cannot log in' }],
    ];
    for (const [what, name, expected] of cases) {
      let hintSeen: string | undefined;
      const result = await failure(
        admin.query('select pgvpd.user_add($1, $2, $3, $4)', [id, 'u', scramVerifier('pw'), name]).catch((error: unknown) => {
          hintSeen = (error as { hint?: string }).hint;
          throw error;
        }),
      );
      t.same(result, { code: expected.code, message: expected.message }, what);
      if (expected.hint !== undefined) t.equal(hintSeen, expected.hint, `${what}: hint`);
    }
    // pgvpd_api given LOGIN, in a transaction rolled back (roles are cluster-wide): still pgvpd's own.
    const superuserClient = await connect(db.url);
    try {
      await superuserClient.query('begin');
      await superuserClient.query('alter role pgvpd_api login');
      const refused = await superuserClient
        .query('select pgvpd.user_add($1, $2, $3, $4)', [id, 'u', scramVerifier('pw'), 'pgvpd_api'])
        .then(
          () => 'no error',
          (error: unknown) => {
            const { code, message, hint: seen } = error as Failure & { hint?: string };
            return { code, message, hint: seen };
          },
        );
      t.same(
        refused,
        { code: '42501', message: `pgvpd: connect_as role pgvpd_api is one of pgvpd's own roles`, hint },
        'pgvpd_api itself, made LOGIN',
      );
    } finally {
      await superuserClient.query('rollback');
      await superuserClient.end();
    }
    t.same((await admin.query('select * from pgvpd.org_users($1)', [id])).rows, [], 'no user was added');

    await admin.query('select pgvpd.user_add($1, $2, $3, $4)', [id, 'u', scramVerifier('pw'), app.name]);
    t.same(
      await failure(admin.query('select pgvpd.user_set_connect_as($1, $2, $3)', [id, 'u', bypass])),
      { code: '42501', message: `pgvpd: connect_as role ${bypass} has BYPASSRLS` },
      'user_set_connect_as checks the same way',
    );
  });

  t.test('a connect_as role is an application role while a user refers to it', async (t) => {
    const customer = await role(t, 'login nosuperuser nobypassrls');
    const a = await org();
    const b = await org();
    t.notOk((await appRoles()).includes(customer), 'not an application role before');
    await admin.query('select pgvpd.user_add($1, $2, $3, $4)', [a.id, 'u', scramVerifier('pw'), customer]);
    await admin.query('select pgvpd.user_add($1, $2, $3, $4)', [b.id, 'u', scramVerifier('pw'), customer]);
    t.ok((await appRoles()).includes(customer), 'an application role once used');
    await db.query('create table public.shared_rows (id int, tenant_id text)');
    await db.query(`select pgvpd.protect('public.shared_rows')`);
    t.equal(
      (await db.query(`select has_table_privilege($1, 'public.shared_rows', 'SELECT') as ok`, [customer])).rows[0]!.ok,
      true,
      'so protect() grants it the tables',
    );
    await admin.query('select pgvpd.org_remove($1)', [a.id]);
    t.ok((await appRoles()).includes(customer), 'still one while another org uses it');
    await admin.query('select pgvpd.org_remove($1)', [b.id]);
    t.notOk((await appRoles()).includes(customer), 'no longer once unused');
    t.equal((await db.query('select count(*)::int as n from pg_roles where rolname = $1', [customer])).rows[0]!.n, 1, 'the role is never dropped');
    t.same((await admin.query('select * from pgvpd.orgs() where id in ($1, $2)', [a.id, b.id])).rows, [], 'orgs removed');
  });

  t.test('org_remove leaves a role that was an application role before as it was', async (t) => {
    const { id } = await org();
    await admin.query('select pgvpd.user_add($1, $2, $3, $4)', [id, 'u', scramVerifier('pw'), app.name]);
    await admin.query('select pgvpd.org_remove($1)', [id]);
    t.ok((await appRoles()).includes(app.name));
  });

  t.test('changing connect_as moves what pgvpd granted from the old role to the new', async (t) => {
    const first = await role(t, 'login');
    const second = await role(t, 'login');
    const { id } = await org();
    await admin.query('select pgvpd.user_add($1, $2, $3, $4)', [id, 'u', scramVerifier('pw'), first]);
    await admin.query('select pgvpd.user_set_connect_as($1, $2, $3)', [id, 'u', second]);
    const roles = await appRoles();
    t.notOk(roles.includes(first), 'the old role is released');
    t.ok(roles.includes(second), 'the new role is an application role');
    await admin.query('select pgvpd.user_remove($1, $2)', [id, 'u']);
    t.notOk((await appRoles()).includes(second), 'removing the user releases it');
  });

  t.test('USAGE on schema pgvpd is granted when missing and only that grant is revoked', async (t) => {
    // A database of its own: this one revokes USAGE on pgvpd from PUBLIC.
    const other = await createTestDatabase(t);
    await installPgvpd(other);
    await other.query('revoke usage on schema pgvpd from public');
    const bare = await role(t, 'login');
    const granted = await role(t, 'login');
    await other.query(`grant usage on schema pgvpd to ${granted}`);
    const { id } = (await other.query<{ id: string }>(`select pgvpd.org_create('x', 'usage-org') as id`)).rows[0]!;
    const usage = async (name: string) =>
      (await other.query(`select has_schema_privilege($1, 'pgvpd', 'USAGE') as ok`, [name])).rows[0]!.ok;
    t.equal(await usage(bare), false);
    await other.query('select pgvpd.user_add($1, $2, $3, $4)', [id, 'a', scramVerifier('pw'), bare]);
    await other.query('select pgvpd.user_add($1, $2, $3, $4)', [id, 'b', scramVerifier('pw'), granted]);
    t.equal(await usage(bare), true, 'granted to the role that lacked it');
    t.same(
      (await other.query(`select role_name, grant_kind from pgvpd_private.connect_as_grants order by grant_kind, role_name`)).rows,
      [
        ...[bare, granted].sort().map((r) => ({ role_name: r, grant_kind: 'app_role' })),
        { role_name: bare, grant_kind: 'usage on schema pgvpd' },
      ],
      'what pgvpd granted is recorded',
    );
    await other.query('select pgvpd.org_remove($1)', [id]);
    t.equal(await usage(bare), false, 'revoked from the role pgvpd granted it to');
    t.equal(await usage(granted), true, 'a grant pgvpd did not make stays');
    t.same((await other.query('select * from pgvpd_private.connect_as_grants')).rows, []);
  });
  t.end();
});

t.test('the snapshot and who may call what', (t) => {
  t.test('catalog_snapshot gives the proxy servers, orgs and users with their verifiers', async (t) => {
    const other = await createTestDatabase(t);
    await installPgvpd(other);
    const proxyHere = await loginRole(t, other, 'proxy');
    const client = await proxyHere.connect();
    t.teardown(() => client.end());
    const customer = await role(t, 'login');
    await other.query(`select pgvpd.server_add('west', 'db-west', 5433, 'require')`);
    const { id: acme } = (await other.query<{ id: string }>(`select pgvpd.org_create('Acme', 'acme') as id`)).rows[0]!;
    const { id: big } = (await other.query<{ id: string }>(`select pgvpd.org_create('Big', 'big', 'dedicated', 'west') as id`)).rows[0]!;
    await other.query('select pgvpd.org_suspend($1)', [big]);
    const verifier = scramVerifier('pw');
    await other.query('select pgvpd.user_add($1, $2, $3, $4)', [acme, 'alice', verifier, customer]);
    const { snapshot } = (await client.query('select pgvpd.catalog_snapshot() as snapshot')).rows[0]!;
    t.same(snapshot, {
      servers: [
        { name: 'default', host: null, port: null, tls: 'disable' },
        { name: 'west', host: 'db-west', port: 5433, tls: 'require' },
      ],
      orgs: [
        { id: acme, database_name: 'acme', status: 'active', placement: 'shared', server: 'default', target_database: other.name, pool_mode: null },
        { id: big, database_name: 'big', status: 'suspended', placement: 'dedicated', server: 'west', target_database: 'big', pool_mode: null },
      ],
      users: [{ org_id: acme, username: 'alice', verifier, connect_as: customer }],
      mock_secret: (snapshot as { mock_secret: string }).mock_secret,
    });
    t.match((snapshot as { mock_secret: string }).mock_secret, /^[0-9a-f]{64}$/, 'the mock secret, 32 bytes in hex');
    const again = (await client.query('select pgvpd.catalog_snapshot() as snapshot')).rows[0]!.snapshot as { mock_secret: string };
    t.equal(again.mock_secret, (snapshot as { mock_secret: string }).mock_secret, 'the same for every proxy, every time');
  });

  t.test('an application role may execute only the accessors and reports, none of the catalog', async (t) => {
    const { rows } = await db.query<{ fn: string }>(
      `select p.oid::regprocedure::text as fn from pg_proc p
        where p.pronamespace in ('pgvpd'::regnamespace, 'pgvpd_private'::regnamespace)
          and has_function_privilege($1, p.oid, 'EXECUTE') order by 1`,
      [app.name],
    );
    t.same(
      rows.map((r) => r.fn),
      [
        'pgvpd.app_roles()',
        // backend_start, switch_context: what the proxy's switch grant needs on the backend
        'pgvpd.backend_start()',
        'pgvpd.confinement()',
        'pgvpd.connect_as_roles()',
        'pgvpd.context(text)',
        'pgvpd.context_path()',
        'pgvpd.current_tenant_id()',
        // grant_protected: grants only what protect and registration decided (docs/sql-core.md)
        'pgvpd.grant_protected(regclass,name)',
        'pgvpd.lint()',
        'pgvpd.protect(regclass,name)',
        'pgvpd.protected_privileges(regclass)',
        'pgvpd.protection_note(regclass)',
        'pgvpd.relation_privilege_held(regclass,text,oid,boolean)',
        'pgvpd.set_context(text)',
        'pgvpd.status()',
        'pgvpd.switch_context(bigint,text,text)',
        'pgvpd.tenant_column_names()',
        // answers only pgvpd_admin members; lint() needs it for transaction_pool_temp
        'pgvpd.transaction_pool_temp_roles()',
        'pgvpd.unprotect(regclass)',
        'pgvpd.user_tables()',
        'pgvpd.version()',
      ],
    );
  });

  const adminOnly = [
    `select pgvpd.server_add('s', 'h', 5432)`,
    `select pgvpd.server_remove('s')`,
    'select * from pgvpd.servers()',
    'select * from pgvpd.reserved_names()',
    `select pgvpd.reserved_name_add('x')`,
    `select pgvpd.reserved_name_remove('x')`,
    `select pgvpd.org_name_available('x')`,
    `select pgvpd.org_create('x')`,
    `select pgvpd.org_id('x')`,
    `select pgvpd.org_suspend('00000000-0000-0000-0000-000000000000')`,
    `select pgvpd.org_resume('00000000-0000-0000-0000-000000000000')`,
    `select pgvpd.org_remove('00000000-0000-0000-0000-000000000000')`,
    `select * from pgvpd.org_purge_rows('00000000-0000-0000-0000-000000000000', 'x')`,
    'select * from pgvpd.orgs()',
    `select pgvpd.user_add('00000000-0000-0000-0000-000000000000', 'u', 'v', 'r')`,
    `select pgvpd.user_set_verifier('00000000-0000-0000-0000-000000000000', 'u', 'v')`,
    `select pgvpd.user_set_connect_as('00000000-0000-0000-0000-000000000000', 'u', 'r')`,
    `select pgvpd.user_remove('00000000-0000-0000-0000-000000000000', 'u')`,
    `select * from pgvpd.org_users('00000000-0000-0000-0000-000000000000')`,
    `select pgvpd.resolver_add('pgvpd.version()', 1)`,
    `select pgvpd.resolver_remove('pgvpd.version()')`,
    'select * from pgvpd.resolvers()',
  ];
  t.test('the application role and the proxy may not call the admin functions (42501)', async (t) => {
    for (const sql of adminOnly) {
      const fn = /pgvpd\.(\w+)/.exec(sql)![1]!;
      for (const [who, client] of [
        ['app', appClient],
        ['proxy', proxy],
      ] as const) {
        t.same(
          await failure(client.query(sql)),
          { code: '42501', message: `permission denied for function ${fn}` },
          `${who}: ${fn}`,
        );
      }
    }
  });

  t.test('only the proxy may read the snapshot; nobody else reads the tables', async (t) => {
    t.same(await failure(appClient.query('select pgvpd.catalog_snapshot()')), {
      code: '42501',
      message: 'permission denied for function catalog_snapshot',
    });
    for (const table of ['servers', 'orgs', 'org_users', 'reserved_names', 'resolvers', 'connect_as_grants']) {
      for (const client of [appClient, proxy]) {
        t.same(
          await failure(client.query(`select * from pgvpd_private.${table}`)),
          { code: '42501', message: 'permission denied for schema pgvpd_private' },
          table,
        );
      }
    }
  });

  t.test('lint stays clean with the catalog in use', async (t) => {
    const { id } = await org();
    // A connect_as role of its own. The other orgs of this file share app's, which lint reports
    // on the SQL path (connect_as_shared); tenant roles' missing lock_timeout is lint.test.ts's.
    const own = await role(t, 'login');
    await admin.query('select pgvpd.user_add($1, $2, $3, $4)', [id, 'linted', scramVerifier('pw'), own]);
    t.same(
      (await lintLines(db)).filter((line) => !line.startsWith('warning lock_without_timeout ')),
      (await contextPath(db)) === 'guard' ? [] : [`warning connect_as_shared ${app.name}`],
    );
  });
  t.end();
});
