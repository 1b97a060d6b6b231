// A running app-mode proxy in front of a test database: pgvpd installed, a protected table with
// rows of tenants acme (2) and globex (3), an application role, a pgvpd_proxy role for the
// control connections. Everything is torn down with the test.
import pg from 'pg';
import { loadConfig, type ConfigKey, type ProxyConfig } from '../../proxy/config.js';
import { createLogger } from '../../proxy/logger.js';
import { startProxy, type ProxyHandle } from '../../proxy/index.js';
import { createTestDatabase, type TestDatabase, type TestLike } from '../support/postgres.js';
import { installPgvpd, loginRole, type LoginRole } from '../support/pgvpd.js';

export interface ProxyFixture {
  db: TestDatabase;
  app: LoginRole;
  proxyRole: LoginRole;
  proxy: ProxyHandle;
  config: ProxyConfig;
  /** `<app role>.<tenant>` */
  userFor(tenant: string): string;
  /** Connection settings for pg through the proxy. */
  through(user: string, password?: string): pg.ClientConfig;
  /** A connected pg client through the proxy, ended at teardown. */
  connect(user: string, password?: string, extra?: pg.ClientConfig): Promise<pg.Client>;
  /** libpq connection string through the proxy. */
  conninfo(user: string, extra?: string): string;
}

export async function proxyFixture(
  t: TestLike,
  overrides: Partial<Record<ConfigKey, unknown>> = {},
  opts: { db?: TestDatabase } = {},
): Promise<ProxyFixture> {
  const db = opts.db ?? (await createTestDatabase(t));
  if (!opts.db) {
    await installPgvpd(db);
    await db.query(`
      create table public.notes (id serial primary key, tenant_id text not null, body text);
      insert into public.notes (tenant_id, body)
        values ('acme', 'a1'), ('acme', 'a2'), ('globex', 'g1'), ('globex', 'g2'), ('globex', 'g3');
      select pgvpd.protect('public.notes');
    `);
  }
  const app = await loginRole(t, db, 'app');
  const proxyRole = await loginRole(t, db, 'proxy');
  await db.query(`grant select, insert, update, delete on public.notes to ${app.name}`);
  await db.query(`grant usage on sequence public.notes_id_seq to ${app.name}`);
  const config = loadConfig({
    flags: {
      port: 0,
      upstream_host: db.server.host,
      upstream_port: db.server.port,
      control_url: proxyRole.url,
      handshake_timeout: 10,
      log_level: 'silent',
      ...overrides,
    },
  });
  const proxy = await startProxy(config, { logger: createLogger(config.log_level) });
  t.teardown(() => proxy.close(1));
  const through = (user: string, password = app.password): pg.ClientConfig => ({
    host: '127.0.0.1',
    port: proxy.port,
    database: db.name,
    user,
    password,
  });
  return {
    db,
    app,
    proxyRole,
    proxy,
    config,
    userFor: (tenant) => `${app.name}.${tenant}`,
    through,
    async connect(user, password, extra = {}) {
      const client = new pg.Client({ ...through(user, password), ...extra });
      client.on('error', () => undefined);
      await client.connect();
      t.teardown(() => client.end().catch(() => undefined));
      return client;
    },
    conninfo: (user, extra = '') =>
      `host=127.0.0.1 port=${String(proxy.port)} dbname=${db.name} user=${user} password=${app.password} ${extra}`.trim(),
  };
}

/** Counts of rows per tenant the client can see in public.notes. */
export async function visible(
  client: pg.Client,
): Promise<{ acme: number; globex: number; total: number }> {
  const { rows } = await client.query<{ acme: number; globex: number; total: number }>(
    `select count(*) filter (where tenant_id = 'acme')::int as acme,
            count(*) filter (where tenant_id = 'globex')::int as globex,
            count(*)::int as total
       from public.notes`,
  );
  return rows[0]!;
}
