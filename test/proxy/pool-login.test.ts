// Opening pooled upstream sessions: the proxy logs in as a connect_as role with its configured
// password, whatever method pg_hba asks for, and reports a refusal with the upstream's SQLSTATE;
// with backendStart it also reads the backend's start (pgvpd.backend_start()), or fails.
import { createServer, type Server } from 'node:net';
import t from 'tap';
import type { ProxyError } from '../../proxy/errors.js';
import { loginUpstream, type PoolKey, type PooledSession } from '../../proxy/upstream/login.js';
import {
  createTestDatabase,
  poolKeyFor,
  serverInfo,
  testRoles,
  type TestDatabase,
} from '../support/postgres.js';
import { installPgvpd, sqlstate } from '../support/pgvpd.js';

const keyFor = poolKeyFor;

function closeSession(session: PooledSession): void {
  session.socket.destroy();
}

async function backendOf(
  db: TestDatabase,
  pid: number,
): Promise<{ usename: string; datname: string; application_name: string } | undefined> {
  const { rows } = await db.query<{ usename: string; datname: string; application_name: string }>(
    'select usename, datname, application_name from pg_stat_activity where pid = $1',
    [pid],
  );
  return rows[0];
}

async function listening(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

t.test('logs in with each method pg_hba asks for', async (t) => {
  const db = await createTestDatabase(t);
  const methods = [testRoles.scram, testRoles.md5, testRoles.password, testRoles.trust];
  for (const role of methods) {
    const session = await loginUpstream(keyFor(db, role.user), { password: role.password });
    t.teardown(() => {
      closeSession(session);
    });
    t.same(
      await backendOf(db, session.backendPid),
      { usename: role.user, datname: db.name, application_name: 'pgvpd' },
      `${role.method}: the backend runs as the role, in the database`,
    );
    t.equal(session.broken, false, `${role.method}: the session is usable`);
    t.equal(session.reader.pending, 0, `${role.method}: nothing is left unread`);
  }
});

t.test('collects the backend key and the parameters the backend reports', async (t) => {
  const db = await createTestDatabase(t);
  const session = await loginUpstream(keyFor(db, testRoles.scram.user), {
    password: testRoles.scram.password,
    applicationName: 'pgvpd-pool',
    parameters: { TimeZone: 'Pacific/Auckland', user: 'postgres', database: 'postgres' },
  });
  t.teardown(() => {
    closeSession(session);
  });
  t.ok(session.backendPid > 0, 'the backend pid');
  t.equal(typeof session.secretKey, 'number', 'the cancel key');
  t.equal(session.parameters.get('TimeZone'), 'Pacific/Auckland', 'an extra startup parameter');
  t.equal(session.parameters.get('application_name'), 'pgvpd-pool', 'application_name');
  t.match(session.parameters.get('server_version'), /^\d+/, 'server_version');
  t.equal(
    (await backendOf(db, session.backendPid))?.usename,
    testRoles.scram.user,
    'extra parameters cannot override user or database',
  );
  t.ok(session.createdAt <= Date.now() && session.lastUsedAt === session.createdAt, 'timestamps');
});

t.test('with backendStart the login reads the start pg_stat_activity shows for it', async (t) => {
  const db = await createTestDatabase(t);
  await installPgvpd(db);
  const session = await loginUpstream(keyFor(db, testRoles.scram.user), {
    password: testRoles.scram.password,
    backendStart: true,
  });
  t.teardown(() => {
    closeSession(session);
  });
  // Microseconds since the epoch, spelled from the seconds with six decimals.
  const { rows } = await db.query<{ seconds: string }>(
    'select extract(epoch from backend_start)::numeric(20, 6)::text as seconds from pg_stat_activity where pid = $1',
    [session.backendPid],
  );
  t.equal(session.backendStart, rows[0]!.seconds.replace('.', ''));
  t.equal(session.switchSeq, 0, 'no grant minted yet');
  t.equal(session.reader.pending, 0, 'nothing is left unread');
  t.equal(session.broken, false, 'the session is usable');
  t.match(session.parameters.get('server_version'), /^\d+/, 'the parameters are kept');

  const plain = await loginUpstream(keyFor(db, testRoles.scram.user), {
    password: testRoles.scram.password,
  });
  t.teardown(() => {
    closeSession(plain);
  });
  t.equal(plain.backendStart, '', 'without the option the start is not read');
});

t.test(
  'with backendStart a database whose pgvpd predates backend_start() fails the login with 42883',
  async (t) => {
    const db = await createTestDatabase(t);
    await installPgvpd(db);
    await db.query('drop function pgvpd.backend_start()');
    const failed = loginUpstream(keyFor(db, testRoles.scram.user), {
      password: testRoles.scram.password,
      backendStart: true,
    });
    await t.rejects(failed, {
      code: '42883',
      kind: 'upstream_backend_start_failed',
      message: 'function pgvpd.backend_start() does not exist',
      logMessage: `pooled login of role "${testRoles.scram.user}" on database "${db.name}" could not read pgvpd.backend_start(): function pgvpd.backend_start() does not exist`,
    });
    const backends = async (): Promise<number> =>
      (
        await db.query<{ n: number }>(
          'select count(*)::int as n from pg_stat_activity where datname = $1 and usename = $2',
          [db.name, testRoles.scram.user],
        )
      ).rows[0]!.n;
    for (let i = 0; i < 50 && (await backends()) > 0; i++)
      await new Promise((resolve) => setTimeout(resolve, 20));
    t.equal(await backends(), 0, 'the failed login closed its backend');
  },
);

t.test('a wrong password is refused with the upstream SQLSTATE 28P01', async (t) => {
  const db = await createTestDatabase(t);
  for (const role of [testRoles.scram, testRoles.md5, testRoles.password]) {
    const refused = loginUpstream(keyFor(db, role.user), { password: 'not-the-password' });
    t.equal(await sqlstate(refused), '28P01', role.method);
    await t.rejects(refused, {
      kind: 'upstream_login_refused',
      message: `password authentication failed for user "${role.user}"`,
    });
  }
});

t.test('a role that needs a password and has none configured fails with 28P01', async (t) => {
  const db = await createTestDatabase(t);
  const refused = loginUpstream(keyFor(db, testRoles.scram.user), { password: undefined });
  await t.rejects(refused, {
    code: '28P01',
    kind: 'connect_as_no_password',
    message: `upstream asked for SCRAM-SHA-256 authentication of role "${testRoles.scram.user}", and no password is configured for it`,
  });
});

t.test('an unknown database is refused with 3D000', async (t) => {
  const db = await createTestDatabase(t);
  const refused = loginUpstream(keyFor(db, testRoles.trust.user, `${db.name}_missing`), {
    password: undefined,
  });
  t.equal(await sqlstate(refused), '3D000');
});

t.test('an unreachable server fails with 08006 naming it', async (t) => {
  const probe = createServer();
  const port = await listening(probe);
  await new Promise<void>((resolve) => {
    probe.close(() => {
      resolve();
    });
  });
  const key: PoolKey = {
    target: { host: '127.0.0.1', port, tls: false, tlsVerify: true, tlsCa: undefined },
    database: 'postgres',
    role: 'nobody',
  };
  const failed = loginUpstream(key, { password: undefined });
  await t.rejects(failed, {
    code: '08006',
    message: new RegExp(
      `^could not connect to upstream server 127\\.0\\.0\\.1:${port}: ECONNREFUSED`,
    ),
  });
});

t.test('a server that never answers fails with 08006 after the login timeout', async (t) => {
  const silent = createServer(() => undefined);
  const port = await listening(silent);
  t.teardown(() => {
    silent.close();
  });
  const key: PoolKey = {
    target: { host: '127.0.0.1', port, tls: false, tlsVerify: true, tlsCa: undefined },
    database: 'postgres',
    role: 'nobody',
  };
  const started = Date.now();
  const error = (await loginUpstream(key, { password: undefined, timeoutMs: 200 }).catch(
    (e: unknown) => e,
  )) as ProxyError;
  t.equal(error.code, '08006');
  t.equal(error.message, `login to upstream server 127.0.0.1:${port} timed out after 200 ms`);
  t.ok(Date.now() - started >= 190, 'after the timeout, not before');
});

const info = await serverInfo();

t.test(
  'logs in over TLS when the server offers it',
  { skip: info.tls === undefined && 'server has no TLS' },
  async (t) => {
    const db = await createTestDatabase(t);
    const tls = db.server.tls;
    if (tls === undefined) throw new Error('no TLS');
    // The ssl role is accepted on hostssl lines only: a login proves the connection used TLS.
    const key = keyFor(db, testRoles.ssl.user);
    key.target = { ...key.target, host: 'localhost', tls: true, tlsCa: tls.ca };
    const session = await loginUpstream(key, { password: testRoles.ssl.password });
    t.teardown(() => {
      closeSession(session);
    });
    const { rows } = await db.query<{ ssl: boolean }>(
      'select ssl from pg_stat_ssl where pid = $1',
      [session.backendPid],
    );
    t.same(rows, [{ ssl: true }]);
  },
);
