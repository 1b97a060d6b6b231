// SCRAM pass-through (auth/scram-server.ts, auth/scram-client.ts, upstream/login.ts): the proxy
// checks a client's proof against the role's own verifier, keeps the ClientKey the proof reveals,
// and logs in to PostgreSQL as that role with it, knowing no password. A wrong password gives no
// key; a key that is not the role's is refused by PostgreSQL (28P01); keys from a verifier the
// role no longer has (its password changed) or from another role fail before a proof is sent
// (28P01, the log saying why); and the server must prove it knows the verifier. The verifier comes
// from the database through the control connection (pgvpd.app_role_verifier).
import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import { ScramClient } from '../../proxy/auth/scram-client.js';
import { ScramServer, scramMechanism } from '../../proxy/auth/scram-server.js';
import { parseVerifier, type ScramVerifier } from '../../proxy/auth/scram-verifier.js';
import type { ProxyError } from '../../proxy/errors.js';
import { loginUpstream, type PoolKey } from '../../proxy/upstream/login.js';
import { ControlPools } from '../../proxy/upstream/control.js';
import { installPgvpd, loginRole, scratchRole, sqlstate } from '../support/pgvpd.js';
import {
  createTestDatabase,
  poolKeyFor,
  testRoles,
  type TestDatabase,
} from '../support/postgres.js';

const db = await createTestDatabase(t);

const keyFor = (role: string): PoolKey => poolKeyFor(db, role);

async function verifierOf(database: TestDatabase, role: string): Promise<ScramVerifier> {
  const { rows } = await database.query<{ rolpassword: string }>(
    'select rolpassword from pg_authid where rolname = $1',
    [role],
  );
  const verifier = parseVerifier(rows[0]?.rolpassword ?? '');
  if (!verifier) throw new Error(`no SCRAM verifier for ${role}`);
  return verifier;
}

/** A client (with `password`) against the proxy's SCRAM server for `verifier`: the outcome. */
function clientLogin(role: string, verifier: ScramVerifier, password: string) {
  const server = ScramServer.forVerifier(role, verifier);
  const client = new ScramClient(password);
  const serverFirst = server.receiveClientFirst(scramMechanism, client.firstMessage());
  const outcome = server.receiveClientFinal(client.finalMessage(serverFirst));
  if (outcome.ok) client.verifyFinal(outcome.serverFinal);
  return outcome;
}

async function failure(promise: Promise<unknown>) {
  try {
    await promise;
    return 'no error';
  } catch (error) {
    const { code, kind, message, logMessage } = error as ProxyError;
    return { code, kind, message, logMessage };
  }
}

t.test("a client's proof lets the proxy log in as the role, with no password", async (t) => {
  const role = await scratchRole(t, db, 'nosuperuser');
  const verifier = await verifierOf(db, role.name);
  const outcome = clientLogin(role.name, verifier, role.password);
  if (!outcome.ok) throw outcome.error;
  const session = await loginUpstream(keyFor(role.name), {
    password: undefined,
    scramKeys: { clientKey: outcome.clientKey, verifier },
  });
  t.teardown(() => session.socket.destroy());
  const { rows } = await db.query<{ usename: string }>(
    'select usename from pg_stat_activity where pid = $1',
    [session.backendPid],
  );
  t.same(rows, [{ usename: role.name }], 'the backend is the role’s');
});

t.test('a wrong password gives no key: 28P01', async (t) => {
  const role = await scratchRole(t, db, 'nosuperuser');
  const outcome = clientLogin(role.name, await verifierOf(db, role.name), 'not the password');
  t.equal(outcome.ok, false);
  if (!outcome.ok) t.equal(outcome.error.code, '28P01');
});

t.test('a ClientKey that is not the role’s is refused by PostgreSQL: 28P01', async (t) => {
  const role = await scratchRole(t, db, 'nosuperuser');
  const verifier = await verifierOf(db, role.name);
  const outcome = clientLogin(role.name, verifier, role.password);
  if (!outcome.ok) throw outcome.error;
  const forged = Buffer.from(outcome.clientKey);
  forged[0] = (forged[0] ?? 0) ^ 1;
  const refused = await failure(
    loginUpstream(keyFor(role.name), {
      password: undefined,
      scramKeys: { clientKey: forged, verifier },
    }),
  );
  t.match(refused, {
    code: '28P01',
    message: `password authentication failed for user "${role.name}"`,
  });
});

t.test('keys from a verifier the role no longer has fail before any proof is sent', async (t) => {
  const role = await scratchRole(t, db, 'nosuperuser');
  const verifier = await verifierOf(db, role.name);
  const outcome = clientLogin(role.name, verifier, role.password);
  if (!outcome.ok) throw outcome.error;
  await db.query(`alter role ${role.name} password '${randomBytes(9).toString('hex')}'`);
  const stale = await failure(
    loginUpstream(keyFor(role.name), {
      password: undefined,
      scramKeys: { clientKey: outcome.clientKey, verifier },
    }),
  );
  t.same(stale, {
    code: '28P01',
    kind: 'scram_keys_stale',
    message: `password authentication failed for user "${role.name}"`,
    logMessage: `SCRAM pass-through login of role "${role.name}": the server's salt or iteration count is not the verifier's the client was checked against (its password changed meanwhile)`,
  });

  const other = await scratchRole(t, db, 'nosuperuser');
  const theirs = await failure(
    loginUpstream(keyFor(other.name), {
      password: undefined,
      scramKeys: { clientKey: outcome.clientKey, verifier },
    }),
  );
  t.match(theirs, { code: '28P01', kind: 'scram_keys_stale' }, 'nor do another role’s keys');
});

t.test('keys never open a login the server does not check (trust): 28000', async (t) => {
  const role = await scratchRole(t, db, 'nosuperuser');
  const verifier = await verifierOf(db, role.name);
  const outcome = clientLogin(role.name, verifier, role.password);
  if (!outcome.ok) throw outcome.error;
  const unchecked = await failure(
    loginUpstream(keyFor(testRoles.trust.user), {
      password: undefined,
      scramKeys: { clientKey: outcome.clientKey, verifier },
    }),
  );
  t.match(unchecked, {
    code: '28000',
    kind: 'scram_pass_through_unchecked',
    message: `upstream let role "${testRoles.trust.user}" in without checking a password; a SCRAM pass-through login needs it to`,
  });
});

t.test(
  'the server must prove it knows the verifier: a wrong ServerKey ends the login',
  async (t) => {
    const role = await scratchRole(t, db, 'nosuperuser');
    const verifier = await verifierOf(db, role.name);
    const outcome = clientLogin(role.name, verifier, role.password);
    if (!outcome.ok) throw outcome.error;
    const doubtful = { ...verifier, serverKey: randomBytes(32) };
    const ended = await failure(
      loginUpstream(keyFor(role.name), {
        password: undefined,
        scramKeys: { clientKey: outcome.clientKey, verifier: doubtful },
      }),
    );
    t.match(ended, { code: '08P01', message: /server signature does not match/ });
  },
);

t.test('through the control connection: the lookup, then a login with the keys', async (t) => {
  await installPgvpd(db);
  const proxyRole = await loginRole(t, db, 'proxy');
  const control = new ControlPools(proxyRole.url, 1);
  t.teardown(() => control.close());
  const app = await loginRole(t, db, 'app');
  const found = await control.appRoleVerifier(db.name, app.name);
  const { rows: secret } = await db.query<{ mock: Buffer }>(
    'select mock_secret as mock from pgvpd_private.proxy_secret',
  );
  const mockSecret = secret[0]!.mock;
  t.equal(mockSecret.length, 32, 'the database has a 32-byte mock secret');
  t.same(
    found,
    { verifier: await verifierOf(db, app.name), problem: undefined, mockSecret },
    'the role’s own verifier, and the database’s mock secret',
  );
  const outcome = clientLogin(app.name, found.verifier!, app.password);
  if (!outcome.ok) throw outcome.error;
  const session = await loginUpstream(keyFor(app.name), {
    password: undefined,
    scramKeys: { clientKey: outcome.clientKey, verifier: found.verifier! },
  });
  t.teardown(() => session.socket.destroy());
  t.ok(session.backendPid > 0, 'logged in with the keys');

  t.same(
    await control.appRoleVerifier(db.name, `nobody_${randomBytes(3).toString('hex')}`),
    { verifier: undefined, problem: undefined, mockSecret },
    'an unknown role: nothing but the mock secret',
  );
  const md5 = await loginRole(t, db, 'app');
  const hash = createHash('md5').update(`secret${md5.name}`).digest('hex');
  await db.query(`alter role ${md5.name} password 'md5${hash}'`);
  t.same(
    await control.appRoleVerifier(db.name, md5.name),
    { verifier: undefined, problem: 'md5', mockSecret },
    'an MD5 role: the problem named',
  );

  // A database that does not exist: PostgreSQL's 3D000, and the control pool of that name is not
  // kept (the name is a client's, sent before it authenticated).
  const missing = `nodb_${randomBytes(3).toString('hex')}`;
  t.equal(await sqlstate(control.appRoleVerifier(missing, app.name)), '3D000');
  t.notOk(
    [...(control as unknown as { pools: Map<string, unknown> }).pools.keys()].some((id) =>
      id.includes(missing),
    ),
    'no control pool is kept for it',
  );
});
