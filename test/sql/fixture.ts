// A database with pgvpd installed, one protected table holding rows of tenants a and b, an
// application role, a proxy role, and sessions with a context — the ground most SQL tests stand on.
import type pg from 'pg';
import { createTestDatabase, type TestDatabase, type TestLike } from '../support/postgres.js';
import { giveContext, installPgvpd, loginRole, type LoginRole } from '../support/pgvpd.js';

export interface Fixture {
  db: TestDatabase;
  app: LoginRole;
  proxy: pg.Client;
  /** A new application-role session carrying a context for `tenant`, closed at teardown. */
  sessionFor(tenant: string | null): Promise<{ client: pg.Client; token: string | null }>;
  /** Rows of each tenant the client can see in the protected table. */
  visible(client: pg.Client): Promise<{ a: number; b: number; total: number }>;
}

export async function fixture(t: TestLike): Promise<Fixture> {
  const db = await createTestDatabase(t);
  await installPgvpd(db);
  await db.query(`
    create table public.notes (id serial primary key, tenant_id text not null, body text);
    insert into public.notes (tenant_id, body) values ('a', 'a1'), ('a', 'a2'), ('b', 'b1'), ('b', 'b2'), ('b', 'b3');
  `);
  const app = await loginRole(t, db, 'app');
  const proxyRole = await loginRole(t, db, 'proxy');
  await db.query(`select pgvpd.protect('public.notes')`);
  const proxy = await proxyRole.connect();
  t.teardown(() => proxy.end());

  return {
    db,
    app,
    proxy,
    async sessionFor(tenant) {
      const client = await app.connect();
      t.teardown(() => client.end());
      const token = tenant === null ? null : await giveContext(proxy, client, tenant);
      return { client, token };
    },
    async visible(client) {
      const { rows } = await client.query<{ a: number; b: number; total: number }>(
        `select count(*) filter (where tenant_id = 'a')::int as a,
                count(*) filter (where tenant_id = 'b')::int as b,
                count(*)::int as total
           from public.notes`,
      );
      return rows[0]!;
    },
  };
}
