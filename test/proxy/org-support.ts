// Helpers for the org-mode acceptance tests (org-*.test.ts): clients through an org-mode proxy
// whose lifetime is one subtest, what a client sees of its org, and how a connection failed.
import pg from 'pg';
import type { TestDatabase, TestLike } from '../support/postgres.js';
import { waitFor } from './clients-support.js';

export interface OrgLogin {
  port: number;
  database: string;
  user: string;
  password: string;
}

/** A connected pg client through the proxy, ended when `t` ends (not when the file ends). */
export async function openClient(
  t: TestLike,
  login: OrgLogin,
  extra: pg.ClientConfig = {},
): Promise<pg.Client> {
  const client = new pg.Client({ host: '127.0.0.1', ...login, ...extra });
  client.on('error', () => undefined);
  await client.connect();
  t.teardown(() => client.end().catch(() => undefined));
  return client;
}

/** The tenant of the session's context and the docs rows it sees (bodies, sorted). */
export async function seen(client: pg.Client): Promise<{ tenant: string | null; rows: string[] }> {
  const { rows } = await client.query<{ tenant: string | null; rows: string[] | null }>(
    `select pgvpd.current_tenant_id() as tenant,
            (select array_agg(body order by body) from public.docs) as rows`,
  );
  return { tenant: rows[0]!.tenant, rows: rows[0]!.rows ?? [] };
}

/** Drops a pg client's connection without a Terminate, as a crashed client would. */
export function cut(client: pg.Client): void {
  (
    client as unknown as { connection: { stream: { destroy(): void } } }
  ).connection.stream.destroy();
}

export interface Failure {
  severity: string | undefined;
  code: string | undefined;
  message: string;
  hint: string | undefined;
}

/** How a promise was rejected (a pg DatabaseError's fields); fails the test if it resolved. */
export async function failure(promise: Promise<unknown>): Promise<Failure> {
  try {
    await promise;
  } catch (error) {
    const e = error as Partial<pg.DatabaseError> & { message: string };
    return { severity: e.severity, code: e.code, message: e.message, hint: e.hint };
  }
  throw new Error('expected a failure, and it succeeded');
}

export const pause = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Until the pooled backend `pid` is idle after the pool's reset (ROLLBACK, DISCARD ALL), or gone:
 * the release runs after the client has left.
 */
export async function resetDone(
  db: TestDatabase,
  pid: number,
  timeoutMs = 10_000,
): Promise<boolean> {
  return waitFor(async () => {
    const { rows } = await db.query<{ state: string; query: string }>(
      'select state, query from pg_stat_activity where pid = $1',
      [pid],
    );
    return rows.length === 0 || (rows[0]!.state === 'idle' && rows[0]!.query === 'DISCARD ALL');
  }, timeoutMs);
}
