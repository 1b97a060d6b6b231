// An org-mode proxy in front of a test database: the catalog (orgs acme-analytics and
// beta-db, both shared placement), alice in each org with her own password, one connect_as role,
// a protected table docs (2 rows of acme, 3 of beta), and the passfile for the connect_as role.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { loadConfig, type ConfigKey } from '../../proxy/config.js';
import { createLogger, type Logger } from '../../proxy/logger.js';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import { startProxy, type ProxyHandle } from '../../proxy/index.js';
import { createTestDatabase, type TestDatabase, type TestLike } from '../support/postgres.js';
import { installPgvpd, loginRole, type LoginRole } from '../support/pgvpd.js';

export interface OrgFixture {
  db: TestDatabase;
  proxy: ProxyHandle;
  orgs: { acme: string; beta: string };
  connectAs: string;
  /** The connect_as role's password (the passfile's, for any host). */
  connectAsPassword: string;
  /** control_url's login role, a pgvpd_proxy member. */
  proxyRole: LoginRole;
  /** A connected client through the proxy, ended at teardown. */
  connect(database: string, user: string, password: string): Promise<pg.Client>;
}

export async function orgFixture(
  t: TestLike,
  overrides: Partial<Record<ConfigKey, unknown>> = {},
  opts: { logger?: Logger } = {},
): Promise<OrgFixture> {
  const db = await createTestDatabase(t);
  await installPgvpd(db);
  const connectAs = `pgvpd_org_${randomBytes(4).toString('hex')}`;
  const rolePassword = randomBytes(9).toString('hex');
  await db.query(
    `create role ${connectAs} login password '${rolePassword}' nosuperuser nobypassrls noinherit`,
  );
  t.teardown(async () => {
    await db.query(`drop owned by ${connectAs}`).catch(() => undefined);
    await db.query(`drop role if exists ${connectAs}`).catch(() => undefined);
  });
  const acme = (
    await db.query<{ id: string }>(`select pgvpd.org_create('Acme', 'acme-analytics') as id`)
  ).rows[0]!.id;
  const beta = (await db.query<{ id: string }>(`select pgvpd.org_create('Beta', 'beta-db') as id`))
    .rows[0]!.id;
  await db.query('select pgvpd.user_add($1, $2, $3, $4)', [
    acme,
    'alice',
    makeVerifier('alice-at-acme'),
    connectAs,
  ]);
  await db.query('select pgvpd.user_add($1, $2, $3, $4)', [
    beta,
    'alice',
    makeVerifier('alice-at-beta'),
    connectAs,
  ]);
  await db.query(`
    create table public.docs (id serial primary key, org_id uuid not null, body text);
    insert into public.docs (org_id, body) values
      ('${acme}', 'a1'), ('${acme}', 'a2'), ('${beta}', 'b1'), ('${beta}', 'b2'), ('${beta}', 'b3');
    select pgvpd.protect('public.docs', 'org_id');
    grant select, insert on public.docs to ${connectAs};
    grant usage on sequence public.docs_id_seq to ${connectAs};
  `);
  const proxyRole = await loginRole(t, db, 'proxy');
  const dir = mkdtempSync(join(tmpdir(), 'pgvpd-passfile-'));
  const passfile = join(dir, 'passfile');
  writeFileSync(passfile, `*:*:*:${connectAs}:${rolePassword}\n`, { mode: 0o600 });
  const config = loadConfig({
    flags: {
      mode: 'org',
      port: 0,
      upstream_host: db.server.host,
      upstream_port: db.server.port,
      control_url: proxyRole.url,
      connect_as_passfile: passfile,
      handshake_timeout: 10,
      log_level: 'silent',
      ...overrides,
    },
  });
  const proxy = await startProxy(config, { logger: opts.logger ?? createLogger(config.log_level) });
  t.teardown(() => proxy.close(1));
  return {
    db,
    proxy,
    orgs: { acme, beta },
    connectAs,
    connectAsPassword: rolePassword,
    proxyRole,
    async connect(database, user, password) {
      const client = new pg.Client({
        host: '127.0.0.1',
        port: proxy.port,
        database,
        user,
        password,
      });
      client.on('error', () => undefined);
      await client.connect();
      t.teardown(() => client.end().catch(() => undefined));
      return client;
    },
  };
}
