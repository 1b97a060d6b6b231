// Verifiers against the real PostgreSQL of the run: what makeVerifier writes, PostgreSQL stores
// and accepts at login; what PostgreSQL writes, parseVerifier reads and ScramServer accepts.
// The harness's pg_hba asks for scram-sha-256 on TCP, so a login proves the verifier.
import { createRequire } from 'node:module';
import pg from 'pg';
import t from 'tap';
import { ScramServer, scramMechanism } from '../../proxy/auth/scram-server.js';
import { makeVerifier, parseVerifier } from '../../proxy/auth/scram-verifier.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { connect, installPgvpd, loginRole, sqlstate, type LoginRole } from '../support/pgvpd.js';

interface PgSaslSession {
  response: string;
}
interface PgSasl {
  startSession(mechanisms: string[]): PgSaslSession;
  continueSession(session: PgSaslSession, password: string, serverData: string): Promise<void>;
  finalizeSession(session: PgSaslSession, serverData: string): void;
}
const pgSasl = createRequire(import.meta.url)('pg/lib/crypto/sasl.js') as PgSasl;

async function setPassword(db: TestDatabase, role: string, secret: string): Promise<void> {
  await db.query(`alter role ${pg.escapeIdentifier(role)} password ${pg.escapeLiteral(secret)}`);
}

async function storedSecret(db: TestDatabase, role: string): Promise<string | null> {
  const { rows } = await db.query<{ rolpassword: string | null }>(
    'select rolpassword from pg_authid where rolname = $1',
    [role],
  );
  return rows[0]?.rolpassword ?? null;
}

/** current_user after logging in as `role` with `password`, or the SQLSTATE of the refusal. */
async function loginAs(db: TestDatabase, role: LoginRole, password: string): Promise<string> {
  let client: pg.Client | undefined;
  const state = await sqlstate(
    connect(db.urlFor(role.name, password)).then((c) => {
      client = c;
    }),
  );
  if (client === undefined) return state;
  try {
    const { rows } = await client.query<{ user: string }>('select current_user as user');
    return rows[0]?.user ?? 'no row';
  } finally {
    await client.end();
  }
}

t.test(
  'PostgreSQL stores makeVerifier’s verifiers as they are and logs in with them',
  async (t) => {
    const db = await createTestDatabase(t);
    await installPgvpd(db);
    const role = await loginRole(t, db, 'app');
    const cases: {
      name: string;
      password: string;
      iterations?: number;
      saltBytes?: number;
      /** Spellings that must log in too (SASLprep-equivalent). */
      alsoTyped?: string[];
    }[] = [
      { name: 'the defaults', password: 'correct horse battery staple' },
      {
        name: 'more iterations and a 32-byte salt',
        password: 's3cret',
        iterations: 10_000,
        saltBytes: 32,
      },
      { name: 'a multibyte password', password: 'pässwörd 🔑' },
      { name: 'a ligature password', password: 'ﬁsh', alsoTyped: ['fish'] },
      { name: 'a fullwidth password', password: 'ＡＢＣ123', alsoTyped: ['ABC123'] },
    ];
    for (const c of cases) {
      const opts: { iterations?: number; salt?: Buffer } = {};
      if (c.iterations !== undefined) opts.iterations = c.iterations;
      if (c.saltBytes !== undefined) opts.salt = Buffer.alloc(c.saltBytes, 5);
      const verifier = makeVerifier(c.password, opts);
      await setPassword(db, role.name, verifier);
      t.equal(await storedSecret(db, role.name), verifier, `${c.name}: stored verbatim`);
      t.equal(await loginAs(db, role, c.password), role.name, `${c.name}: the password logs in`);
      for (const typed of c.alsoTyped ?? []) {
        t.equal(await loginAs(db, role, typed), role.name, `${c.name}: so does "${typed}"`);
      }
      t.equal(await loginAs(db, role, `${c.password}x`), '28P01', `${c.name}: another does not`);
    }
  },
);

t.test('a verifier PostgreSQL made is parsed, reproduced and served by the proxy', async (t) => {
  const db = await createTestDatabase(t);
  await installPgvpd(db);
  const role = await loginRole(t, db, 'app');
  const password = 'made by postgres';
  // One round trip, so that the setting applies to the connection that runs the alter.
  await db.query(
    `begin; set local password_encryption = 'scram-sha-256'; ` +
      `alter role ${pg.escapeIdentifier(role.name)} password ${pg.escapeLiteral(password)}; commit`,
  );
  const stored = await storedSecret(db, role.name);
  const verifier = parseVerifier(stored ?? '');
  if (verifier === undefined) {
    t.fail(`PostgreSQL's verifier ${String(stored)} does not parse`);
    return;
  }
  t.equal(verifier.salt.length, 16, 'PostgreSQL’s salt is 16 bytes');
  t.equal(
    makeVerifier(password, { salt: verifier.salt, iterations: verifier.iterations }),
    stored,
    'makeVerifier with its salt and count writes the very same text',
  );

  const server = ScramServer.forVerifier(role.name, verifier);
  const session = pgSasl.startSession([scramMechanism]);
  const serverFirst = server.receiveClientFirst(scramMechanism, session.response);
  await pgSasl.continueSession(session, password, serverFirst);
  const outcome = server.receiveClientFinal(session.response);
  t.ok(outcome.ok, 'the proxy authenticates node-postgres against PostgreSQL’s verifier');
  if (outcome.ok) {
    t.doesNotThrow(() => {
      pgSasl.finalizeSession(session, outcome.serverFinal);
    }, 'and node-postgres accepts the proxy’s server signature');
  }
});
