// Helpers for the org-mode acceptance tests (org-*.test.ts): clients through an org-mode proxy
// whose lifetime is one subtest, what a client sees of its org, and how a connection failed.
import pg from 'pg';
import { ScramClient } from '../../proxy/auth/scram-client.js';
import type { TestDatabase, TestLike } from '../support/postgres.js';
import {
  WireClient,
  authCodeOf,
  cstring,
  int32,
  startupMessage,
  typedMessage,
} from '../support/wire.js';
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
    // The reset ends with DISCARD ALL, or with the statement that gives the backend its last
    // owner's context back (SessionPool's restore step: set_context of the context it held, or a
    // switch), which runs only after a clean reset.
    return (
      rows.length === 0 ||
      (rows[0]!.state === 'idle' &&
        (rows[0]!.query === 'DISCARD ALL' || /pgvpd\.(switch|set)_context\(/.test(rows[0]!.query)))
    );
  }, timeoutMs);
}

/**
 * A raw client that stops after the server-first-message, as a client deriving its SCRAM key;
 * finish() sends its proof for `password`. Closed when `t` ends.
 */
export async function scramHalfway(
  t: TestLike,
  port: number,
  startup: Record<string, string>,
  password: string,
): Promise<{ wire: WireClient; finish(): void }> {
  const wire = await WireClient.connect(port);
  t.teardown(() => {
    wire.destroy();
  });
  wire.write(startupMessage(startup));
  const sasl = await wire.readFrame();
  if (sasl.code !== 'R' || authCodeOf(sasl) !== 10) throw new Error('expected AuthenticationSASL');
  const scram = new ScramClient(password);
  const first = Buffer.from(scram.firstMessage(), 'utf8');
  wire.write(
    typedMessage('p', Buffer.concat([cstring('SCRAM-SHA-256'), int32(first.length), first])),
  );
  const serverFirst = await wire.readFrame();
  if (serverFirst.code !== 'R' || authCodeOf(serverFirst) !== 11)
    throw new Error('expected SASLContinue');
  return {
    wire,
    finish: () => {
      wire.write(
        typedMessage('p', Buffer.from(scram.finalMessage(serverFirst.body.toString('utf8', 4)))),
      );
    },
  };
}
