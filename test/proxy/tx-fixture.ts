// Shared set-up of the transaction-mode acceptance tests (tx-ownership, tx-residue,
// tx-pipelines, tx-statements, tx-failures, tx-parameters): an org-mode proxy (org-fixture.ts)
// with pool_mode = transaction over one or two pooled backends for both orgs (one connect_as
// role, one pool key), raw protocol clients logged in through it, the frontend messages they
// send (pg-protocol's serializer), how their answers are read, and the server's own log of the
// statements a backend ran.
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import type { ConfigKey } from '../../proxy/config.js';
import { serialize } from '../../proxy/protocol/encode.js';
import { readState, sharedRunDir } from '../support/server.js';
import type { TestDatabase, TestLike } from '../support/postgres.js';
import {
  WireClient,
  errorFieldsOf,
  parseBackend,
  startupMessage,
  type Frame,
} from '../support/wire.js';
import { orgFixture, type OrgFixture } from './org-fixture.js';
import { openClient, type OrgLogin } from './org-support.js';

export const orgNames = ['acme', 'beta'] as const;
export type Org = (typeof orgNames)[number];

const logins = {
  acme: { database: 'acme-analytics', user: 'alice', password: 'alice-at-acme' },
  beta: { database: 'beta-db', user: 'alice', password: 'alice-at-beta' },
} as const;

/** The bodies of public.docs each org's alice sees, sorted. */
export const rowsOf: Record<Org, string[]> = {
  acme: ['a1', 'a2'],
  beta: ['b1', 'b2', 'b3'],
};

/** Which backend answered, whose context it holds and the docs rows it sees (one statement). */
export const viewSql =
  'select pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant, ' +
  "(select coalesce(array_agg(body order by body), '{}') from public.docs) as rows";

export interface View {
  pid: number;
  tenant: string | null;
  rows: string[];
}

export interface TxOrgs {
  f: OrgFixture;
  db: TestDatabase;
  login(org: Org): OrgLogin;
  /** What `org`'s alice sees: its tenant and its rows. */
  expected(org: Org): { tenant: string; rows: string[] };
  /** A pg client of `org` through the proxy, ended when `t` ends. */
  client(t: TestLike, org: Org, extra?: pg.ClientConfig): Promise<pg.Client>;
  /** A raw protocol client of `org`, logged in, closed when `t` ends. */
  raw(t: TestLike, org: Org, startup?: Record<string, string>): Promise<RawClient>;
}

/**
 * An org-mode proxy in transaction mode over `pool_size` (default 1) backends for both orgs,
 * with `overrides` on top.
 */
export async function txOrgs(
  t: TestLike,
  overrides: Partial<Record<ConfigKey, unknown>> = {},
): Promise<TxOrgs> {
  const f = await orgFixture(t, { pool_mode: 'transaction', pool_size: 1, ...overrides });
  const login = (org: Org): OrgLogin => ({ port: f.proxy.port, ...logins[org] });
  return {
    f,
    db: f.db,
    login,
    expected: (org) => ({ tenant: f.orgs[org], rows: rowsOf[org] }),
    client: (t, org, extra) => openClient(t, login(org), extra),
    raw: (t, org, startup) => rawLogin(t, login(org), startup),
  };
}

/** viewSql's one row. */
export async function view(client: pg.Client): Promise<View> {
  const { rows } = await client.query<View>(viewSql);
  return rows[0]!;
}

/** A view without its pid, to compare with TxOrgs.expected(). */
export const seenIn = (v: View): { tenant: string | null; rows: string[] } => ({
  tenant: v.tenant,
  rows: v.rows,
});

// ── raw clients ─────────────────────────────────────────────────────────────────────────────
export interface RawClient {
  wire: WireClient;
  /** The BackendKeyData the proxy gave it. */
  key: { processId: number; secretKey: Buffer };
  /** ParameterStatus values of the handshake. */
  parameters: Map<string, string>;
}

export async function rawLogin(
  t: TestLike,
  login: OrgLogin,
  startup: Record<string, string> = {},
): Promise<RawClient> {
  const wire = await WireClient.connect(login.port);
  t.teardown(() => {
    wire.destroy();
  });
  wire.write(startupMessage({ user: login.user, database: login.database, ...startup }));
  const frames = await wire.authenticate(login.password, 15_000);
  const keyFrame = frames.find((frame) => frame.code === 'K');
  if (!keyFrame) throw new Error('no BackendKeyData in the handshake');
  const parameters = new Map<string, string>();
  for (const frame of frames) if (frame.code === 'S') parameters.set(...statusOf(frame));
  return {
    wire,
    key: { processId: keyFrame.body.readInt32BE(0), secretKey: keyFrame.body.subarray(4) },
    parameters,
  };
}

/** A ParameterStatus frame's name and value. */
export function statusOf(frame: Frame): [string, string] {
  const end = frame.body.indexOf(0);
  return [
    frame.body.toString('utf8', 0, end),
    frame.body.toString('utf8', end + 1).replace(/\0$/, ''),
  ];
}

/** Frontend messages, from pg-protocol's serializer. */
export const msg = {
  query: (sql: string): Buffer => serialize.query(sql),
  parse: (name: string, text: string): Buffer => serialize.parse({ name, text }),
  bind: (statement = '', values: (string | null)[] = [], portal = ''): Buffer =>
    serialize.bind({ statement, values, portal }),
  describeStatement: (name: string): Buffer => serialize.describe({ type: 'S', name }),
  describePortal: (name = ''): Buffer => serialize.describe({ type: 'P', name }),
  execute: (portal = ''): Buffer => serialize.execute({ portal }),
  closeStatement: (name: string): Buffer => serialize.close({ type: 'S', name }),
  sync: (): Buffer => serialize.sync(),
  flush: (): Buffer => serialize.flush(),
  copyData: (data: Buffer): Buffer => serialize.copyData(data),
  copyDone: (): Buffer => serialize.copyDone(),
  copyFail: (message: string): Buffer => serialize.copyFail(message),
};

/** One unnamed Parse/Bind/Execute/Sync of `sql`, no parameters. */
export const pbes = (sql: string): Buffer =>
  Buffer.concat([msg.parse('', sql), msg.bind(), msg.execute(), msg.sync()]);

/** What a run of backend messages says, compactly. */
export interface Answer {
  /** Message codes in order, e.g. '12DCZ'. */
  codes: string;
  /** DataRow values in order (text format). */
  rows: (string | null)[][];
  /** ErrorResponses: SQLSTATE and message. */
  errors: { code: string | undefined; message: string | undefined; severity: string | undefined }[];
  /** The status byte of each ReadyForQuery. */
  statuses: string;
}

export function answerOf(frames: Frame[]): Answer {
  const answer: Answer = { codes: '', rows: [], errors: [], statuses: '' };
  for (const frame of frames) {
    answer.codes += frame.code;
    if (frame.code === 'D') {
      const [row] = parseBackend(frame.raw) as unknown as { fields: (string | null)[] }[];
      answer.rows.push(row?.fields ?? []);
    } else if (frame.code === 'E') {
      const fields = errorFieldsOf(frame);
      answer.errors.push({ code: fields.C, message: fields.M, severity: fields.S });
    } else if (frame.code === 'Z') {
      answer.statuses += String.fromCharCode(frame.body[0] ?? 0);
    }
  }
  return answer;
}

/** Frames up to and including the `count`th ReadyForQuery (errors do not stop it). */
export async function readReadies(
  wire: WireClient,
  count: number,
  wait = 10_000,
): Promise<Frame[]> {
  const frames: Frame[] = [];
  let seen = 0;
  while (seen < count) {
    const frame = await wire.readFrame(wait);
    frames.push(frame);
    if (frame.code === 'Z') seen += 1;
  }
  return frames;
}

/** Frames until the server closes the connection (the last is usually a FATAL). */
export async function readToClose(wire: WireClient, wait = 10_000): Promise<Frame[]> {
  const frames: Frame[] = [];
  for (;;) {
    try {
      frames.push(await wire.readFrame(wait));
    } catch (error) {
      if (/connection closed/.test((error as Error).message)) return frames;
      throw error;
    }
  }
}

// ── the server's statement log ──────────────────────────────────────────────────────────────
/**
 * The statements PostgreSQL itself logged (log_statement = all, turned on for the connect_as
 * role's new sessions) for one backend pid, read from the server's log file. Only a server the
 * harness started has a log file it can read (system and embedded, through its run directory).
 */
export class StatementLog {
  private constructor(
    private readonly file: string,
    private from: number,
  ) {}

  /**
   * Turns on statement logging for the connect_as role's sessions (call before any client
   * connects: a backend reads the setting at login), or undefined if the server's log cannot be
   * read by this test (a server the harness did not start).
   */
  static async start(x: TxOrgs): Promise<StatementLog | undefined> {
    const state = readState(sharedRunDir());
    const file = state?.runDir ? `${state.runDir}/postgres.log` : undefined;
    if (!file || (state?.kind !== 'system' && state?.kind !== 'embedded')) return undefined;
    try {
      readFileSync(file);
    } catch {
      return undefined;
    }
    await x.db.query(`alter role ${x.f.connectAs} set log_statement = 'all'`);
    return new StatementLog(file, 0).mark();
  }

  /** Starts counting from the end of the log as it is now. */
  mark(): this {
    this.from = readFileSync(this.file).length;
    return this;
  }

  /** The statements `pid` ran since the mark, in order (continuation lines joined). */
  statements(pid: number): string[] {
    const text = readFileSync(this.file).subarray(this.from).toString('utf8');
    const out: string[] = [];
    const head = /^\S+ \S+ \S+ \[(\d+)\] (\w+):\s+(.*)$/;
    let continued = false;
    for (const line of text.split('\n')) {
      const m = head.exec(line);
      if (m) {
        continued = false;
        if (Number(m[1]) !== pid || m[2] !== 'LOG') continue;
        const body = m[3] ?? '';
        const statement = /^(?:statement|execute [^:]*): (.*)$/.exec(body);
        if (!statement) continue;
        out.push(statement[1] ?? '');
        continued = true;
      } else if (continued && line.startsWith('\t')) {
        out.push(`${out.pop() ?? ''} ${line.trim()}`);
      }
    }
    return out;
  }
}
