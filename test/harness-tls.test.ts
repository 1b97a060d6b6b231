// TLS and password methods of the shared test server: the proxy's upstream TLS and auth tests rely
// on every property checked here.
import pg from 'pg';
import t from 'tap';
import {
  type TestDatabase,
  type TestRole,
  createTestDatabase,
  serverInfo,
  testCertificates,
  testRoles,
} from './support/postgres.js';

const info = await serverInfo();
const noTls =
  info.tls === undefined ? `the ${info.kind} server is used as it is, without TLS` : false;

interface Connected {
  client: pg.Client;
  /** Authentication requests the server sent, by pg's message name. */
  authRequests: string[];
}

/** Connects to db as user; `ssl` is passed to pg as it is. */
async function connect(
  db: TestDatabase,
  user: string,
  password: string | undefined,
  ssl: pg.ClientConfig['ssl'],
): Promise<Connected> {
  const client = new pg.Client({
    host: db.server.host,
    port: db.server.port,
    database: db.name,
    user,
    password,
    ssl,
  });
  client.on('error', () => undefined);
  const authRequests: string[] = [];
  for (const name of [
    'authenticationCleartextPassword',
    'authenticationMD5Password',
    'authenticationSASL',
  ]) {
    client.connection.on(name, () => authRequests.push(name));
  }
  try {
    await client.connect();
  } catch (error) {
    await client.end().catch(() => undefined);
    throw error;
  }
  return { client, authRequests };
}

async function sslOf(client: pg.Client): Promise<{ ssl: boolean; who: string }> {
  const { rows } = await client.query<{ ssl: boolean; who: string }>(
    'select ssl, current_user as who from pg_stat_ssl where pid = pg_backend_pid()',
  );
  return rows[0]!;
}

t.test('the test certificates exist whatever the server', async (t) => {
  const certs = await testCertificates();
  t.match(certs.caCertPem, /^-----BEGIN CERTIFICATE-----/, 'the CA certificate is PEM');
  t.match(certs.serverCertPem, /^-----BEGIN CERTIFICATE-----/, 'the server certificate is PEM');
  t.match(certs.serverKeyPem, /^-----BEGIN PRIVATE KEY-----/, 'the server key is PEM');
  const again = await testCertificates();
  t.equal(again.caCertPem, certs.caCertPem, 'a second call returns the same CA');
  if (info.tls !== undefined) {
    t.equal(info.tls.caCert, certs.caCert, 'the server certificate is signed by this CA');
    t.equal(info.tls.ca, certs.caCertPem, 'serverInfo().tls.ca is the PEM of the CA');
  }
});

t.test(
  'a client connects over TLS verifying the server against the test CA',
  { skip: noTls },
  async (t) => {
    const db = await createTestDatabase(t);
    const ca = info.tls!.ca;
    const admin = new URL(db.url);
    const [user, password] = [admin.username, decodeURIComponent(admin.password)];

    const byIp = await connect(db, user, password, { ca });
    t.teardown(() => byIp.client.end());
    t.equal((await sslOf(byIp.client)).ssl, true, 'TLS to 127.0.0.1 verifies the IP SAN');

    const byName = await connect(db, user, password, { ca, servername: 'localhost' });
    t.teardown(() => byName.client.end());
    t.equal(
      (await sslOf(byName.client)).ssl,
      true,
      'TLS with servername localhost verifies the DNS SAN',
    );

    const plain = await connect(db, user, password, false);
    t.teardown(() => plain.client.end());
    t.equal(
      (await sslOf(plain.client)).ssl,
      false,
      'TLS is optional: a plain connection works too',
    );

    await t.rejects(
      connect(db, user, password, { rejectUnauthorized: true }),
      { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' },
      'without the test CA the certificate (sent without its chain) is not trusted',
    );
    await t.rejects(
      connect(db, user, password, { ca, servername: 'elsewhere.example' }),
      { code: 'ERR_TLS_CERT_ALTNAME_INVALID' },
      'a name the certificate does not carry is refused',
    );
  },
);

t.test('the ssl-only role logs in over TLS only', { skip: noTls }, async (t) => {
  const db = await createTestDatabase(t);
  const ca = info.tls!.ca;
  const { user, password } = testRoles.ssl;

  const tls = await connect(db, user, password, { ca, servername: 'localhost' });
  t.teardown(() => tls.client.end());
  t.same(await sslOf(tls.client), { ssl: true, who: user }, 'logged in over TLS');
  t.same(tls.authRequests, ['authenticationSASL'], 'with SCRAM');

  await t.rejects(
    connect(db, user, password, false),
    {
      code: '28000',
      message: new RegExp(
        `^pg_hba\\.conf rejects connection for host "127\\.0\\.0\\.1", user "${user}", database "${db.name}", no encryption$`,
      ),
    },
    'without TLS the hostnossl reject line refuses it with invalid_authorization_specification (28000)',
  );
  await t.rejects(
    connect(db, user, 'wrong-pass', { ca }),
    { code: '28P01' },
    'over TLS a wrong password fails with invalid_password (28P01)',
  );
});

const methods: { role: TestRole; request: string }[] = [
  { role: testRoles.password, request: 'authenticationCleartextPassword' },
  { role: testRoles.md5, request: 'authenticationMD5Password' },
  { role: testRoles.scram, request: 'authenticationSASL' },
];

for (const { role, request } of methods) {
  t.test(`the ${role.method} user logs in with its password only`, async (t) => {
    const db = await createTestDatabase(t);
    const password = role.password!;
    const ok = await connect(db, role.user, password, false);
    t.teardown(() => ok.client.end());
    t.equal((await sslOf(ok.client)).who, role.user, `logged in as ${role.user}`);
    t.same(ok.authRequests, [request], `the server asked with ${request}`);
    await t.rejects(
      connect(db, role.user, 'wrong-pass', false),
      { code: '28P01' },
      'a wrong password fails with invalid_password (28P01)',
    );
    if (info.tls !== undefined) {
      const tls = await connect(db, role.user, password, { ca: info.tls.ca });
      t.teardown(() => tls.client.end());
      t.same(await sslOf(tls.client), { ssl: true, who: role.user }, 'and logs in over TLS too');
    }
  });
}
