// Authentication through the app-mode proxy: SCRAM and cleartext are relayed untouched; MD5
// cannot be relayed across a username rewrite, so the proxy asks for the password (over TLS, or
// with allow_password_without_tls) and answers upstream's MD5 challenge itself.
import pg from 'pg';
import t from 'tap';
import { testCertificates, testRoles } from '../support/postgres.js';
import { sqlstate } from '../support/pgvpd.js';
import { proxyFixture, visible } from './fixture.js';

type Role = (typeof testRoles)['scram' | 'md5' | 'password'];

async function asAppRole(f: Awaited<ReturnType<typeof proxyFixture>>, role: Role): Promise<void> {
  await f.db.query('select pgvpd.add_app_role($1)', [role.user]);
  await f.db.query(`grant select on public.notes to ${role.user}`);
}

async function through(
  f: Awaited<ReturnType<typeof proxyFixture>>,
  role: Role,
  password: string,
  ssl?: pg.ClientConfig['ssl'],
): Promise<pg.Client> {
  const client = new pg.Client({
    ...f.through(`${role.user}.acme`, password),
    ...(ssl === undefined ? {} : { ssl }),
  });
  client.on('error', () => undefined);
  await client.connect();
  t.teardown(() => client.end().catch(() => undefined));
  return client;
}

t.test(
  'SCRAM-SHA-256 is relayed: the right password gets the tenant, a wrong one 28P01',
  async (t) => {
    const f = await proxyFixture(t);
    await asAppRole(f, testRoles.scram);
    t.same(await visible(await through(f, testRoles.scram, testRoles.scram.password)), {
      acme: 2,
      globex: 0,
      total: 2,
    });
    t.equal(await sqlstate(through(f, testRoles.scram, 'wrong')), '28P01');
  },
);

t.test(
  'cleartext password is relayed: the right password works, a wrong one gets 28P01',
  async (t) => {
    const f = await proxyFixture(t);
    await asAppRole(f, testRoles.password);
    t.same(await visible(await through(f, testRoles.password, testRoles.password.password)), {
      acme: 2,
      globex: 0,
      total: 2,
    });
    t.equal(await sqlstate(through(f, testRoles.password, 'wrong')), '28P01');
  },
);

t.test('MD5 without TLS is refused with 28000 and a message saying why', async (t) => {
  const f = await proxyFixture(t);
  await asAppRole(f, testRoles.md5);
  const error = await through(f, testRoles.md5, testRoles.md5.password).then(
    () => undefined,
    (e: unknown) => e as { code?: string; message: string },
  );
  t.equal(error?.code, '28000');
  t.match(
    error?.message,
    /upstream asked for md5, which pgvpd answers with your password; connect with TLS/,
  );
});

t.test('MD5 over client TLS: the proxy takes the password and answers the challenge', async (t) => {
  const certs = await testCertificates();
  const f = await proxyFixture(t, { tls_cert: certs.serverCert, tls_key: certs.serverKey });
  await asAppRole(f, testRoles.md5);
  const ssl = { ca: certs.caCertPem, servername: 'localhost' };
  const client = await through(f, testRoles.md5, testRoles.md5.password, ssl);
  t.same(await visible(client), { acme: 2, globex: 0, total: 2 });
  t.equal(await sqlstate(through(f, testRoles.md5, 'wrong', ssl)), '28P01');
});

t.test('MD5 without TLS works when allow_password_without_tls is set', async (t) => {
  const f = await proxyFixture(t, { allow_password_without_tls: true });
  await asAppRole(f, testRoles.md5);
  t.same(await visible(await through(f, testRoles.md5, testRoles.md5.password)), {
    acme: 2,
    globex: 0,
    total: 2,
  });
  t.equal(await sqlstate(through(f, testRoles.md5, 'wrong')), '28P01');
});

t.test('a trust role passes straight through to its tenant', async (t) => {
  const f = await proxyFixture(t);
  await f.db.query('select pgvpd.add_app_role($1)', [testRoles.trust.user]);
  await f.db.query(`grant select on public.notes to ${testRoles.trust.user}`);
  const client = await f.connect(`${testRoles.trust.user}.globex`, 'ignored');
  t.same(await visible(client), { acme: 0, globex: 3, total: 3 });
});
