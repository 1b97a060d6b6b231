// TLS on both legs: clients may negotiate TLS with the proxy (SSLRequest) when a certificate is
// configured, and the proxy may speak TLS to the upstream, verifying it against a CA.
import { execFile } from 'node:child_process';
import pg from 'pg';
import t from 'tap';
import { serverInfo, testCertificates, testRoles } from '../support/postgres.js';
import { sqlstate } from '../support/pgvpd.js';
import { proxyFixture, visible } from './fixture.js';

const certs = await testCertificates();
const info = await serverInfo();

// Asynchronous on purpose: the proxy runs in this process, so a blocking spawn would starve it.
function psql(
  conninfo: string,
  sql: string,
  password: string,
): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    execFile(
      'psql',
      ['-X', '-A', '-t', '-c', sql, conninfo],
      { encoding: 'utf8', env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: '10' } },
      (error, stdout, stderr) => {
        const status = error ? (typeof error.code === 'number' ? error.code : null) : 0;
        resolve({ status, out: `${stdout}${stderr}`.trim() });
      },
    );
  });
}

t.test('client TLS: psql with sslmode=require and verify-full reaches its tenant', async (t) => {
  const f = await proxyFixture(t, { tls_cert: certs.serverCert, tls_key: certs.serverKey });
  const base = `host=localhost port=${String(f.proxy.port)} dbname=${f.db.name} user=${f.userFor('acme')}`;
  const query = 'select count(*) from public.notes';
  const require = await psql(`${base} sslmode=require`, query, f.app.password);
  t.same(require, { status: 0, out: '2' });
  const verify = await psql(
    `${base} sslmode=verify-full sslrootcert=${certs.caCert}`,
    query,
    f.app.password,
  );
  t.same(verify, { status: 0, out: '2' });
  const shown = await psql(
    `${base} sslmode=verify-full sslrootcert=${certs.caCert}`,
    '\\conninfo',
    f.app.password,
  );
  t.match(shown.out, /SSL connection \(protocol: TLSv1\.[23]/);
});

t.test('client TLS: verify-full fails against a name the certificate does not carry', async (t) => {
  const f = await proxyFixture(t, { tls_cert: certs.serverCert, tls_key: certs.serverKey });
  // The certificate names localhost and 127.0.0.1, not ::1 or another host name.
  const client = new pg.Client({
    ...f.through(f.userFor('acme')),
    ssl: { ca: certs.caCertPem, servername: 'not-the-proxy.example' },
  });
  client.on('error', () => undefined);
  const error = await client.connect().then(
    () => undefined,
    (e: unknown) => e as { code?: string },
  );
  t.equal(error?.code, 'ERR_TLS_CERT_ALTNAME_INVALID');
});

t.test('client TLS: sslmode=require fails when the proxy has no certificate', async (t) => {
  const f = await proxyFixture(t);
  const result = await psql(
    `host=127.0.0.1 port=${String(f.proxy.port)} dbname=${f.db.name} user=${f.userFor('acme')} sslmode=require`,
    'select 1',
    f.app.password,
  );
  t.equal(result.status, 2);
  t.match(result.out, /server does not support SSL, but SSL was required/);
});

t.test(
  'upstream TLS, verified against the CA, reaches a hostssl-only role',
  { skip: info.tls === undefined && 'server has no TLS' },
  async (t) => {
    const f = await proxyFixture(t, {
      upstream_tls: true,
      upstream_tls_ca: certs.caCert,
      upstream_host: '127.0.0.1',
    });
    await f.db.query('select pgvpd.add_app_role($1)', [testRoles.ssl.user]);
    await f.db.query(`grant select on public.notes to ${testRoles.ssl.user}`);
    const client = await f.connect(`${testRoles.ssl.user}.globex`, testRoles.ssl.password);
    t.same(await visible(client), { acme: 0, globex: 3, total: 3 });
    // Read by the superuser: tenant confinement keeps pg_stat_ssl (built on
    // pg_stat_get_activity) from application roles.
    const pid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!
      .pid;
    const { rows } = await f.db.query<{ ssl: boolean }>(
      'select ssl from pg_stat_ssl where pid = $1',
      [pid],
    );
    t.equal(rows[0]?.ssl, true);
    t.equal(await sqlstate(f.connect(`${testRoles.ssl.user}.globex`, 'wrong')), '28P01');
  },
);

t.test(
  'upstream TLS without the CA fails verification with 08006 naming the server',
  { skip: info.tls === undefined && 'server has no TLS' },
  async (t) => {
    const f = await proxyFixture(t, { upstream_tls: true });
    const error = await f.connect(f.userFor('acme')).then(
      () => undefined,
      (e: unknown) => e as { code?: string; message: string },
    );
    t.equal(error?.code, '08006');
    t.match(
      error?.message,
      `TLS with upstream server ${f.db.server.host}:${String(f.db.server.port)} failed`,
    );
  },
);

t.test(
  'upstream TLS with verification off connects without a CA',
  { skip: info.tls === undefined && 'server has no TLS' },
  async (t) => {
    const f = await proxyFixture(t, { upstream_tls: true, upstream_tls_verify: false });
    t.same(await visible(await f.connect(f.userFor('acme'))), { acme: 2, globex: 0, total: 2 });
  },
);

t.test(
  'TLS on both legs with SCRAM: the proxy answers upstream with the client password',
  { skip: info.tls === undefined && 'server has no TLS' },
  async (t) => {
    const f = await proxyFixture(t, {
      tls_cert: certs.serverCert,
      tls_key: certs.serverKey,
      upstream_tls: true,
      upstream_tls_ca: certs.caCert,
    });
    const ssl = { ca: certs.caCertPem, servername: 'localhost' };
    const client = await f.connect(f.userFor('acme'), f.app.password, { ssl });
    t.same(await visible(client), { acme: 2, globex: 0, total: 2 });
    t.equal(await sqlstate(f.connect(f.userFor('acme'), 'wrong', { ssl })), '28P01');
    const viaPsql = await psql(
      `host=localhost port=${String(f.proxy.port)} dbname=${f.db.name} user=${f.userFor('globex')} sslmode=verify-full sslrootcert=${certs.caCert}`,
      'select count(*) from public.notes',
      f.app.password,
    );
    t.same(viaPsql, { status: 0, out: '3' });
  },
);

t.test(
  'client TLS with a plain upstream: libpq channel-binding preference still logs in',
  async (t) => {
    const f = await proxyFixture(t, { tls_cert: certs.serverCert, tls_key: certs.serverKey });
    const result = await psql(
      `host=localhost port=${String(f.proxy.port)} dbname=${f.db.name} user=${f.userFor('acme')} sslmode=require channel_binding=prefer`,
      'select count(*) from public.notes',
      f.app.password,
    );
    t.same(result, { status: 0, out: '2' });
  },
);
