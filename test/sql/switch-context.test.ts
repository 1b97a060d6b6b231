// The one-statement context switch (docs/context-switch.md, migration 000013), on the context path
// this run's server gives (the guard path with PGVPD_TEST_PRELOAD=pgvpd_guard): a grant minted
// under a registered proxy instance's key gives the tenant backend its context in one call, a
// newer grant replaces it, and every other grant (replayed, older, for another backend or an
// earlier one with this pid, under a retired or lapsed instance, with a bad MAC or tampered
// claims, for a role that may not carry it) is refused with 28000 and the exact message, and
// writes nothing. Instances: who may register, renew, leave, retire and list them; retiring kills
// their live contexts. Also the org's pool mode and lint's transaction_pool_temp.
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import type pg from 'pg';
import t from 'tap';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import {
  backendPid,
  connect,
  contextPath,
  giveContext,
  installPgvpd,
  scratchRole,
} from '../support/pgvpd.js';
import { fixture } from './fixture.js';

const f = await fixture(t);
const { db } = f;
const guardPath = (await contextPath(db)) === 'guard';
const none = { a: 0, b: 0, total: 0 };

interface Key {
  instance: string;
  secret: string;
}
interface Claims {
  pid: number;
  start: string;
  seq: number;
  org: string | null;
  tenant: string | null;
  user: string | null;
  vals: Record<string, string | number | boolean>;
}
interface Grant {
  instance: string;
  claims: string;
  mac: string;
}

/** SQLSTATE, message and hint of a rejected query, or 'no error'. */
async function failure(
  promise: Promise<unknown>,
): Promise<{ code?: string; message: string; hint?: string } | 'no error'> {
  try {
    await promise;
    return 'no error';
  } catch (error) {
    const { code, message, hint } = error as { code?: string; message: string; hint?: string };
    return hint === undefined ? { code, message } : { code, message, hint };
  }
}

const refused = (message: string) => ({ code: '28000', message });

async function register(name = 'test-proxy:1:6432', lease = 60): Promise<Key> {
  const { rows } = await f.proxy.query<{ instance_id: string; secret: string }>(
    'select instance_id, secret from pgvpd.register_instance($1, $2)',
    [name, lease],
  );
  return { instance: rows[0]!.instance_id, secret: rows[0]!.secret };
}

/** What the proxy does: HMAC-SHA-256 under the instance key over the claims' UTF-8 bytes. */
function mint(key: Key, claims: Claims | string): Grant {
  const text = typeof claims === 'string' ? claims : JSON.stringify(claims);
  const mac = createHmac('sha256', Buffer.from(key.secret, 'hex')).update(text, 'utf8').digest('hex');
  return { instance: key.instance, claims: text, mac };
}

function use(client: pg.Client, grant: Grant) {
  return client.query<{ tenant: string }>('select pgvpd.switch_context($1::bigint, $2, $3) as tenant', [
    grant.instance,
    grant.claims,
    grant.mac,
  ]);
}

async function backendStart(client: pg.Client): Promise<string> {
  return (await client.query<{ s: string }>('select pgvpd.backend_start() as s')).rows[0]!.s;
}

/** Claims for this client's backend: app mode, tenant `tenant`, sequence `seq`. */
async function claimsFor(client: pg.Client, tenant: string, seq: number): Promise<Claims> {
  return {
    pid: await backendPid(client),
    start: await backendStart(client),
    seq,
    org: null,
    tenant,
    user: null,
    vals: {},
  };
}

/** The context record of a backend, or null. */
async function record(pid: number) {
  const { rows } = await db.query<{ token: string; tenant: string; seq: string | null }>(
    'select token, tenant, seq::text as seq from pgvpd_private.session_context where pid = $1',
    [pid],
  );
  return rows[0] ?? null;
}

async function appSession(): Promise<pg.Client> {
  const { client } = await f.sessionFor(null);
  return client;
}

const key = await register();

t.test('backend_start is this backend\'s start in microseconds since the epoch', async (t) => {
  const client = await appSession();
  const { rows } = await db.query<{ s: string }>(
    `select (extract(epoch from backend_start) * 1000000)::bigint::text as s from pg_stat_activity where pid = $1`,
    [await backendPid(client)],
  );
  t.equal(await backendStart(client), rows[0]!.s);
  t.match(rows[0]!.s, /^[0-9]{16}$/);
});

t.test('an accepted switch sets the tenant, and a newer grant replaces it', async (t) => {
  const client = await appSession();
  t.same(await f.visible(client), none, 'no context before');
  const first = mint(key, { ...(await claimsFor(client, 'a', 1)), user: 'alice', vals: { plan: 'pro', n: 3 } });
  t.same((await use(client, first)).rows, [{ tenant: 'a' }], 'returns the tenant');
  t.same(await f.visible(client), { a: 2, b: 0, total: 2 }, 'tenant a\'s rows only');
  const { rows } = await client.query(
    `select pgvpd.current_tenant_id() as t, pgvpd.context('user') as u, pgvpd.context('plan') as p, pgvpd.context('n') as n`,
  );
  t.same(rows, [{ t: 'a', u: 'alice', p: 'pro', n: '3' }], 'user and values reach the accessors');
  const pid = await backendPid(client);
  t.same(await record(pid), {
    token: `s1.${key.instance}.1.${first.mac}`,
    tenant: 'a',
    seq: '1',
  });
  t.equal(
    (await client.query<{ c: string }>(`select current_setting('pgvpd.context') as c`)).rows[0]!.c,
    `s1.${key.instance}.1.${first.mac}`,
    'pgvpd.context holds the record\'s token',
  );

  await use(client, mint(key, await claimsFor(client, 'b', 5)));
  t.same(await f.visible(client), { a: 0, b: 3, total: 3 }, 'tenant b\'s rows only after the second switch');
  t.same(
    (await client.query(`select pgvpd.context('user') as u, pgvpd.context('plan') as p`)).rows,
    [{ u: null, p: null }],
    'nothing of the first context is left',
  );
  t.equal((await record(pid))!.seq, '5');
});

t.test('setup run again (choose_context_path included) leaves switches working', async (t) => {
  const client = await appSession();
  await use(client, mint(key, await claimsFor(client, 'a', 1)));
  await installPgvpd(db);
  t.same(await f.visible(client), { a: 2, b: 0, total: 2 }, 'the context given before still reads');
  await use(client, mint(key, await claimsFor(client, 'b', 2)));
  t.same(await f.visible(client), { a: 0, b: 3, total: 3 }, 'a new switch works');
  const { rows } = await db.query<{ path: string }>('select path from pgvpd.context_path()');
  t.equal(rows[0]!.path, guardPath ? 'guard' : 'sql', 'on the same path');
});

t.test('a switch replaces a context issued on the control connection, and the other way round', async (t) => {
  const client = await appSession();
  const token = await giveContext(f.proxy, client, 'a');
  await use(client, mint(key, await claimsFor(client, 'b', 1)));
  t.same(await f.visible(client), { a: 0, b: 3, total: 3 });
  t.same(await failure(client.query('select pgvpd.set_context($1)', [token])), {
    code: '28000',
    message: 'pgvpd: context token is no longer current for this backend',
  }, 'the issued token died with the switch');
  await giveContext(f.proxy, client, 'a');
  t.same(await f.visible(client), { a: 2, b: 0, total: 2 }, 'an issued context replaces a switch record');
  await use(client, mint(key, await claimsFor(client, 'b', 1)));
  t.same(await f.visible(client), { a: 0, b: 3, total: 3 }, 'any seq after an issued context');
});

t.test('refused grants: 28000, the exact message, nothing written', async (t) => {
  const client = await appSession();
  const pid = await backendPid(client);
  const other = await appSession();
  const held = mint(key, await claimsFor(client, 'a', 10));
  await use(client, held);
  const before = await record(pid);
  const retired = await register('retired-proxy:2:6432');
  await db.query('select pgvpd.retire_instance($1)', [retired.instance]);
  const lapsed = await register('lapsed-proxy:3:6432', 10);
  await db.query(`update pgvpd_private.proxy_instances set lease_until = now() - interval '1 second' where id = $1`, [
    lapsed.instance,
  ]);
  const claims = await claimsFor(client, 'b', 11);
  const good = mint(key, claims);
  const cases: [string, Grant, ReturnType<typeof refused>][] = [
    [
      'a replayed grant (the seq this backend holds)',
      held,
      refused('pgvpd: switch grant is not newer than the one this backend holds (replayed or out of order)'),
    ],
    [
      'an older grant',
      mint(key, { ...claims, seq: 9 }),
      refused('pgvpd: switch grant is not newer than the one this backend holds (replayed or out of order)'),
    ],
    [
      'a grant minted for another backend',
      mint(key, await claimsFor(other, 'b', 11)),
      refused('pgvpd: switch grant was minted for another backend'),
    ],
    [
      'a grant minted for an earlier backend with this pid',
      mint(key, { ...claims, start: String(BigInt(claims.start) - 1n) }),
      refused('pgvpd: switch grant was minted for an earlier backend with this pid'),
    ],
    [
      'a grant under a retired instance',
      mint(retired, claims),
      refused(`pgvpd: switch grant refused: proxy instance ${retired.instance} is retired or its lease expired`),
    ],
    [
      'a grant under an instance whose lease expired',
      mint(lapsed, claims),
      refused(`pgvpd: switch grant refused: proxy instance ${lapsed.instance} is retired or its lease expired`),
    ],
    [
      'a grant under an instance that does not exist',
      { ...good, instance: '999999999' },
      refused('pgvpd: switch grant refused: proxy instance 999999999 is retired or its lease expired'),
    ],
    [
      'a grant whose MAC is another key\'s',
      { ...good, mac: mint({ instance: key.instance, secret: randomBytes(32).toString('hex') }, claims).mac },
      refused('pgvpd: switch grant signature does not verify'),
    ],
    [
      'a grant with its MAC in upper case',
      { ...good, mac: good.mac.toUpperCase() },
      refused('pgvpd: switch grant signature does not verify'),
    ],
    [
      'a grant named under another instance',
      { ...good, instance: retired.instance === key.instance ? '0' : (await register('third:4:6432')).instance },
      refused('pgvpd: switch grant signature does not verify'),
    ],
    [
      'tampered claims (the tenant changed after minting)',
      { ...good, claims: good.claims.replace('"tenant":"b"', '"tenant":"a"') },
      refused('pgvpd: switch grant signature does not verify'),
    ],
    [
      'tampered claims (the same JSON, spelt differently)',
      { ...good, claims: good.claims.replace('{', '{ ') },
      refused('pgvpd: switch grant signature does not verify'),
    ],
  ];
  for (const [what, grant, expected] of cases) {
    t.same(await failure(use(client, grant)), expected, what);
    t.same(await record(pid), before, `${what}: nothing written`);
  }
  t.not(good.claims.replace('"tenant":"b"', '"tenant":"a"'), good.claims, 'the tampering changed the claims');

  // A refusal is an error: PostgreSQL undoes the failed statement's setting changes, so the
  // backend keeps what it held. The proxy resets a backend before switching it, so what it holds
  // after a refused switch is no context; it then drops the backend.
  t.same(await f.visible(client), { a: 2, b: 0, total: 2 }, 'without a reset: the context held before');
  await client.query('reset all');
  for (const [what, grant, expected] of cases) {
    t.same(await failure(use(client, grant)), expected, `after RESET ALL: ${what}`);
    t.same(await f.visible(client), none, `after RESET ALL: ${what}: zero rows`);
  }
  const { rows } = await client.query(`select pgvpd.current_tenant_id() as t, pgvpd.context('tenant') as c`);
  t.same(rows, [{ t: null, c: null }], 'neither accessor names a tenant');

  t.same((await use(client, good)).rows, [{ tenant: 'b' }], 'the good grant is still good');
  t.same(await f.visible(client), { a: 0, b: 3, total: 3 });
});

t.test('a grant is good on one backend once, and never on a later backend with its pid', async (t) => {
  const client = await appSession();
  const grant = mint(key, await claimsFor(client, 'a', 1));
  await use(client, grant);
  // The same pid with an older start is what a backend that ended and whose pid was reused sees.
  const pid = await backendPid(client);
  await db.query(`update pgvpd_private.session_context set backend_start = backend_start - interval '1 hour' where pid = $1`, [pid]);
  const aged = JSON.parse(grant.claims) as Claims;
  t.same(await failure(use(client, mint(key, { ...aged, start: String(BigInt(aged.start) - 3_600_000_000n), seq: 2 }))),
    refused('pgvpd: switch grant was minted for an earlier backend with this pid'));
});

t.test('the role check and the value checks are issue_context\'s and issue_org_context\'s', async (t) => {
  // A superuser's backend: refused as issue_context refuses it, message and hint.
  const superuser = await connect(db.url);
  t.teardown(() => superuser.end());
  const superPid = await backendPid(superuser);
  const asIssued = await failure(f.proxy.query('select pgvpd.issue_context($1, $2)', [superPid, 'a']));
  t.match(asIssued, { code: '28000', message: `pgvpd: no context for backend ${String(superPid)}: role ` });
  t.same(await failure(use(superuser, mint(key, await claimsFor(superuser, 'a', 1)))), asIssued, 'app mode, superuser');
  t.equal(await record(superPid), null, 'nothing written');

  // Org mode: the org user's own connect_as role only.
  const suffix = randomBytes(3).toString('hex');
  const roleA = await scratchRole(t, db, '');
  const roleB = await scratchRole(t, db, '');
  const orgA = (await db.query<{ id: string }>(`select pgvpd.org_create('A', 'sw-a-${suffix}') as id`)).rows[0]!.id;
  const orgB = (await db.query<{ id: string }>(`select pgvpd.org_create('B', 'sw-b-${suffix}') as id`)).rows[0]!.id;
  await db.query('select pgvpd.user_add($1, $2, $3, $4)', [orgA, 'alice', makeVerifier('pw'), roleA.name]);
  await db.query('select pgvpd.user_add($1, $2, $3, $4)', [orgB, 'bob', makeVerifier('pw'), roleB.name]);
  await db.query(`insert into public.notes (tenant_id, body) values ($1, 'orgA'), ($2, 'orgB'), ($2, 'orgB')`, [orgA, orgB]);
  await db.query(`grant select on public.notes to ${roleA.name}, ${roleB.name}`);
  const clientA = await connect(roleA.url);
  t.teardown(() => clientA.end());
  const pidA = await backendPid(clientA);
  const orgClaims = async (org: string, user: string, seq: number): Promise<Claims> => ({
    ...(await claimsFor(clientA, 'unused', seq)),
    org,
    tenant: null,
    user,
  });
  const rowsOf = async () =>
    (await clientA.query<{ tenant_id: string }>('select tenant_id from public.notes')).rows.map((r) => r.tenant_id);

  t.same((await use(clientA, mint(key, await orgClaims(orgA, 'alice', 1)))).rows, [{ tenant: orgA }], 'the org id is the tenant');
  t.same(await rowsOf(), [orgA], 'org A\'s rows only');
  const asOrgIssued = await failure(f.proxy.query('select pgvpd.issue_org_context($1, $2, $3)', [pidA, orgB, 'bob']));
  t.same(asOrgIssued, {
    code: '28000',
    message: `pgvpd: no context for backend ${String(pidA)}: role ${roleA.name} is not the connect_as role of user 'bob' in active org ${orgB}`,
    hint: 'org mode serves each org user\'s connect_as role, which must be NOSUPERUSER NOBYPASSRLS and a member of no such role',
  });
  t.same(await failure(use(clientA, mint(key, await orgClaims(orgB, 'bob', 2)))), asOrgIssued, 'another org\'s user');
  t.same(
    await failure(use(clientA, mint(key, await claimsFor(clientA, 'a', 2)))),
    {
      code: '28000',
      message: `pgvpd: no context for backend ${String(pidA)}: role ${roleA.name} is an org's connect_as role, served in org mode only`,
      hint: 'app mode serves registered application roles (pgvpd.add_app_role) that are NOSUPERUSER NOBYPASSRLS, members of no such role, and no org\'s connect_as role',
    },
    'app mode on a connect_as role',
  );
  await db.query('select pgvpd.org_suspend($1)', [orgA]);
  t.same(await failure(use(clientA, mint(key, await orgClaims(orgA, 'alice', 2)))), {
    code: '28000',
    message: `pgvpd: no context for backend ${String(pidA)}: role ${roleA.name} is not the connect_as role of user 'alice' in active org ${orgA}`,
    hint: 'org mode serves each org user\'s connect_as role, which must be NOSUPERUSER NOBYPASSRLS and a member of no such role',
  }, 'a suspended org');
  t.same(await rowsOf(), [orgA], 'each refusal wrote nothing: still org A');
  await db.query('select pgvpd.org_resume($1)', [orgA]);
  t.same(await failure(use(clientA, mint(key, { ...(await orgClaims(orgA, 'alice', 2)), tenant: 'b' }))), {
    code: '22023',
    message: 'pgvpd: a switch grant in org mode names a user and no tenant',
  });

  // The values: issue()'s checks and messages.
  const client = await appSession();
  for (const [claims, issued] of [
    [{ tenant: 'x\ny' }, ['x\ny', null, {}]],
    [{ tenant: '' }, ['', null, {}]],
    [{ user: 'u'.repeat(256) }, ['a', 'u'.repeat(256), {}]],
    [{ vals: { tenant: 'b' } }, ['a', null, { tenant: 'b' }]],
    [{ vals: { 'Bad-Name': 1 } }, ['a', null, { 'Bad-Name': 1 }]],
  ] as const) {
    const expected = await failure(
      f.proxy.query('select pgvpd.issue_context($1, $2, $3, $4)', [
        await backendPid(client),
        issued[0],
        issued[1],
        JSON.stringify(issued[2]),
      ]),
    );
    t.match(expected, { code: '22023' });
    t.same(
      await failure(use(client, mint(key, { ...(await claimsFor(client, 'a', 1)), ...claims }))),
      expected,
      `as issue_context: ${JSON.stringify(claims)}`,
    );
  }
  t.equal(await record(await backendPid(client)), null, 'nothing written');
});

t.test('instances: register, renew, leave, retire, list', async (t) => {
  const mine = await register('lister:5:6432', 30);
  t.match(mine.secret, /^[0-9a-f]{64}$/, 'the key, once, as lowercase hex');
  const { rows: stored } = await db.query<{ ipad: Buffer; opad: Buffer }>(
    'select ipad, opad from pgvpd_private.proxy_instances where id = $1',
    [mine.instance],
  );
  const padded = Buffer.concat([Buffer.from(mine.secret, 'hex'), Buffer.alloc(32)]);
  t.same(stored[0]!.ipad, Buffer.from(padded.map((b) => b ^ 0x36)), 'ipad is the padded key XOR 0x36');
  t.same(stored[0]!.opad, Buffer.from(padded.map((b) => b ^ 0x5c)), 'opad is the padded key XOR 0x5c');
  const rawStored = await db.query(
    `select 1 from pgvpd_private.proxy_instances where position(decode($1, 'hex') in ipad || opad) > 0`,
    [mine.secret],
  );
  t.equal(rawStored.rowCount, 0, 'the raw key is stored nowhere');

  const list = async (id: string) =>
    (
      await f.proxy.query<{ name: string; active: boolean; retired: boolean; lease: number }>(
        `select name, active, retired_at is not null as retired,
                round(extract(epoch from lease_until - registered_at))::int as lease
           from pgvpd.instances() where instance_id = $1`,
        [id],
      )
    ).rows;
  t.same(await list(mine.instance), [{ name: 'lister:5:6432', active: true, retired: false, lease: 30 }]);
  const renew = async (id: string, lease = 60) =>
    (await f.proxy.query<{ ok: boolean }>('select pgvpd.renew_instance($1, $2) as ok', [id, lease])).rows[0]!.ok;
  t.equal(await renew(mine.instance, 600), true, 'an active instance is renewed');
  t.match((await list(mine.instance))[0]!.lease, 600, 'to now + the new lease');
  t.equal(await renew('999999999'), false, 'an unknown one is not');

  const lapsed = await register('lapsed:6:6432', 10);
  await db.query(`update pgvpd_private.proxy_instances set lease_until = now() - interval '1 second' where id = $1`, [
    lapsed.instance,
  ]);
  t.equal(await renew(lapsed.instance), false, 'a lapsed lease is not revived');
  t.same((await list(lapsed.instance))[0]!.active, false);

  await f.proxy.query('select pgvpd.leave_instance($1)', [mine.instance]);
  t.same(await list(mine.instance), [{ name: 'lister:5:6432', active: false, retired: true, lease: 600 }], 'left: retired');
  t.equal(await renew(mine.instance), false, 'a retired one is not renewed');
  await f.proxy.query('select pgvpd.leave_instance($1)', [mine.instance]);
  t.pass('leaving twice is harmless');

  const bad = async (sql: string, params: unknown[]) => failure(f.proxy.query(sql, params));
  for (const lease of [9, 86401, null]) {
    t.same(await bad('select pgvpd.register_instance($1, $2)', ['p', lease]), {
      code: '22023',
      message: 'pgvpd: an instance lease must be 10 to 86400 seconds',
    }, `register with lease ${String(lease)}`);
    t.same(await bad('select pgvpd.renew_instance($1, $2)', [lapsed.instance, lease]), {
      code: '22023',
      message: 'pgvpd: an instance lease must be 10 to 86400 seconds',
    }, `renew with lease ${String(lease)}`);
  }
  for (const name of ['', 'x'.repeat(201), 'a\tb', null]) {
    t.same(await bad('select pgvpd.register_instance($1, $2)', [name, 60]), {
      code: '22023',
      message: 'pgvpd: an instance name must be 1 to 200 characters without control characters',
    }, `register named ${JSON.stringify(name)}`);
  }
  t.same(await failure(db.query('select pgvpd.retire_instance($1)', [mine.instance])), {
    code: '22023',
    message: `pgvpd: no active proxy instance ${mine.instance}`,
  }, 'retiring a retired instance');
  t.same(await failure(db.query('select pgvpd.retire_instance($1)', ['999999999'])), {
    code: '22023',
    message: 'pgvpd: no active proxy instance 999999999',
  }, 'retiring an unknown instance');
  await db.query('select pgvpd.retire_instance($1)', [lapsed.instance]);
  t.same((await list(lapsed.instance))[0]!.retired, true, 'a lapsed instance can be retired');
});

t.test('privileges: the proxy\'s functions are the proxy\'s, the key table nobody\'s', async (t) => {
  const tenant = await appSession();
  const denied = (name: string) => ({ code: '42501', message: `permission denied for function ${name}` });
  t.same(await failure(tenant.query(`select pgvpd.register_instance('evil', 60)`)), denied('register_instance'));
  t.same(await failure(tenant.query('select pgvpd.renew_instance($1, 60)', [key.instance])), denied('renew_instance'));
  t.same(await failure(tenant.query('select pgvpd.leave_instance($1)', [key.instance])), denied('leave_instance'));
  t.same(await failure(tenant.query('select pgvpd.retire_instance($1)', [key.instance])), denied('retire_instance'));
  t.same(await failure(tenant.query('select * from pgvpd.instances()')), denied('instances'));
  t.same(await failure(tenant.query('select * from pgvpd_private.proxy_instances')), {
    code: '42501',
    message: 'permission denied for schema pgvpd_private',
  });
  t.same(await failure(f.proxy.query('select pgvpd.retire_instance($1)', [key.instance])), denied('retire_instance'));
  t.same(await failure(f.proxy.query('select * from pgvpd_private.proxy_instances')), {
    code: '42501',
    message: 'permission denied for schema pgvpd_private',
  });
  const { rows } = await db.query<{ grantee: string; privilege: string }>(
    `select grantee::regrole::text as grantee, privilege_type as privilege
       from pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner)))
      where c.oid = 'pgvpd_private.proxy_instances'::regclass and grantee <> c.relowner`,
  );
  t.same(rows, [], 'only its owner, pgvpd_admin, has a privilege on the table');
  t.equal(
    (await db.query<{ o: string }>(`select relowner::regrole::text as o from pg_class where oid = 'pgvpd_private.proxy_instances'::regclass`)).rows[0]!.o,
    'pgvpd_admin',
  );
  const { rows: fns } = await db.query<{ fn: string; definer: boolean; owner: string }>(
    `select p.oid::regprocedure::text as fn, p.prosecdef as definer, p.proowner::regrole::text as owner
       from pg_proc p where p.pronamespace = 'pgvpd'::regnamespace
        and p.proname in ('switch_context', 'backend_start') order by 1`,
  );
  t.same(fns, [
    { fn: 'pgvpd.backend_start()', definer: true, owner: 'pgvpd_admin' },
    { fn: 'pgvpd.switch_context(bigint,text,text)', definer: true, owner: 'pgvpd_admin' },
  ]);
});

t.test('retiring an instance kills its live contexts, as retiring a key does', async (t) => {
  const doomed = await register('doomed:7:6432');
  const client = await appSession();
  const pid = await backendPid(client);
  await use(client, mint(doomed, await claimsFor(client, 'a', 1)));
  const survivor = await appSession();
  await use(survivor, mint(key, await claimsFor(survivor, 'b', 1)));
  t.same(await f.visible(client), { a: 2, b: 0, total: 2 });
  const ended = new Promise<string>((resolve) => {
    client.once('error', (error: Error & { code?: string }) => {
      resolve(error.code ?? error.message);
    });
    setTimeout(() => {
      resolve('no error within 5 s');
    }, 5000).unref();
  });
  await db.query('select pgvpd.retire_instance($1)', [doomed.instance]);
  t.equal(await record(pid), null, 'its record is deleted');
  if (guardPath) {
    t.equal(await ended, '57P01', 'guard path: the backend holding it is ended');
  } else {
    t.same(await f.visible(client), none, 'SQL path: the next statement sees no rows');
  }
  t.same(await f.visible(survivor), { a: 0, b: 3, total: 3 }, 'another instance\'s context lives on');

  const leaving = await register('leaving:8:6432');
  const other = await appSession();
  const otherPid = await backendPid(other);
  await use(other, mint(leaving, await claimsFor(other, 'b', 1)));
  const otherEnded = new Promise<string>((resolve) => {
    other.once('error', (error: Error & { code?: string }) => {
      resolve(error.code ?? error.message);
    });
    setTimeout(() => {
      resolve('no error within 5 s');
    }, 5000).unref();
  });
  await f.proxy.query('select pgvpd.leave_instance($1)', [leaving.instance]);
  t.equal(await record(otherPid), null, 'leaving deletes its records too');
  if (guardPath) {
    t.equal(await otherEnded, '57P01', 'guard path: and ends the backends holding them');
  } else {
    t.same(await f.visible(other), none, 'SQL path: the next statement sees no rows');
  }
});

t.test('set_context of a switch\'s token: put back after RESET ALL, refused saying why (000016)', async (t) => {
  const client = await appSession();
  const pid = await backendPid(client);
  await use(client, mint(key, await claimsFor(client, 'a', 1)));
  const token = (await record(pid))!.token;
  t.match(token, new RegExp(`^s1\\.${key.instance}\\.1\\.[0-9a-f]{64}$`), 'the record holds the switch token');
  await client.query('reset all');
  t.same(await f.visible(client), none, 'RESET ALL empties the context');
  await client.query('select pgvpd.set_context($1)', [token]);
  t.same(await f.visible(client), { a: 2, b: 0, total: 2 }, 'set_context of the token puts it back');

  await use(client, mint(key, await claimsFor(client, 'b', 2)));
  t.same(
    await failure(client.query('select pgvpd.set_context($1)', [token])),
    refused('pgvpd: context token is no longer current for this backend'),
    'a token a newer switch replaced',
  );
  t.same(await f.visible(client), { a: 0, b: 3, total: 3 }, 'and the context stays the newer one');
  t.same(
    await failure(client.query('select pgvpd.set_context($1)', [`s1.x.1.${'0'.repeat(64)}`])),
    refused('pgvpd: malformed context token'),
    'an s1 token that is not one',
  );

  // A token of a retired and one of a lapsed instance, tried on another backend (on the guard
  // path retiring ends the backend holding it: nothing is left there to put back).
  const doomed = await register('doomed-restore:9:6432');
  const lapsed = await register('lapsed-restore:10:6432', 10);
  const holders = [await appSession(), await appSession()];
  const tokens: string[] = [];
  for (const [i, instance] of [doomed, lapsed].entries()) {
    const holder = holders[i]!;
    await use(holder, mint(instance, await claimsFor(holder, 'a', 1)));
    tokens.push((await record(await backendPid(holder)))!.token);
  }
  await db.query('select pgvpd.retire_instance($1)', [doomed.instance]);
  await db.query(`update pgvpd_private.proxy_instances set lease_until = now() - interval '1 second' where id = $1`, [
    lapsed.instance,
  ]);
  t.same(
    await failure(client.query('select pgvpd.set_context($1)', [tokens[0]])),
    refused(`pgvpd: context token refused: proxy instance ${doomed.instance} is retired or its lease expired`),
    'a retired instance is named',
  );
  t.same(
    await failure(client.query('select pgvpd.set_context($1)', [tokens[1]])),
    refused(`pgvpd: context token refused: proxy instance ${lapsed.instance} is retired or its lease expired`),
    'so is a lapsed one',
  );
  t.same(await f.visible(client), { a: 0, b: 3, total: 3 }, 'refusals change nothing');
  for (const holder of holders) await holder.end().catch(() => undefined);
});

t.test('the org pool mode: set, reset, refused, in the catalog snapshot, notified', async (t) => {
  const org = (await db.query<{ id: string }>(`select pgvpd.org_create('Pool', 'pool-${randomBytes(3).toString('hex')}') as id`)).rows[0]!.id;
  const snapshotMode = async () => {
    const { rows } = await f.proxy.query<{ mode: string | null; has: boolean }>(
      `select o ->> 'pool_mode' as mode, o ? 'pool_mode' as has
         from jsonb_array_elements(pgvpd.catalog_snapshot() -> 'orgs') o where o ->> 'id' = $1`,
      [org],
    );
    return rows[0];
  };
  t.same(await snapshotMode(), { mode: null, has: true }, 'null: the proxy\'s own pool_mode');
  const listener = await connect(db.url);
  t.teardown(() => listener.end());
  const notified: string[] = [];
  listener.on('notification', (n) => notified.push(n.channel));
  await listener.query('listen pgvpd_catalog');
  await db.query('select pgvpd.org_set_pool_mode($1, $2)', [org, 'transaction']);
  t.same(await snapshotMode(), { mode: 'transaction', has: true });
  await listener.query('select 1');
  t.same(notified, ['pgvpd_catalog'], 'the proxies are told');
  await db.query('select pgvpd.org_set_pool_mode($1, $2)', [org, 'session']);
  t.same(await snapshotMode(), { mode: 'session', has: true });
  await db.query('select pgvpd.org_set_pool_mode($1, null)', [org]);
  t.same(await snapshotMode(), { mode: null, has: true }, 'null resets it');
  for (const mode of ['Transaction', 'statement', '']) {
    t.same(await failure(db.query('select pgvpd.org_set_pool_mode($1, $2)', [org, mode])), {
      code: '22023',
      message: 'pgvpd: pool mode must be session or transaction',
    }, JSON.stringify(mode));
  }
  const unknown = randomUUID();
  t.same(await failure(db.query('select pgvpd.org_set_pool_mode($1, $2)', [unknown, 'session'])), {
    code: '42704',
    message: `pgvpd: no org '${unknown}'`,
  });
  const tenant = await appSession();
  t.same(await failure(tenant.query('select pgvpd.org_set_pool_mode($1, $2)', [org, 'session'])), {
    code: '42501',
    message: 'permission denied for function org_set_pool_mode',
  });
  t.same(await failure(f.proxy.query('select pgvpd.org_set_pool_mode($1, $2)', [org, 'session'])), {
    code: '42501',
    message: 'permission denied for function org_set_pool_mode',
  });
});
