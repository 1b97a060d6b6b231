// Opening one pooled upstream session: the proxy logs in as a connect_as role with the password
// from its own configuration (org-mode clients never see the upstream's challenge), answers
// whatever method pg_hba asks for (SCRAM-SHA-256, MD5, cleartext, trust; §55.2.1/§55.3) and
// waits for the backend to be ready. Failures are ProxyErrors: 08006 when the server cannot be
// reached or talked to, the upstream's own SQLSTATE when it refuses (28P01, 3D000, 53300…).
// With `backendStart`, the login then reads the backend's start (`select pgvpd.backend_start()`,
// one Query, within the same timeout); a session is never returned without it, so every switch
// grant names exactly one backend.
import { serialize } from '../protocol/encode.js';
import { ProxyError, proxyErrors } from '../errors.js';
import { md5Response } from '../auth/md5.js';
import { ScramClient, ScramKeysStale, type ScramKeys } from '../auth/scram-client.js';
import { AuthCode, BackendCode } from '../protocol/codes.js';
import type { Message, PacketReader } from '../protocol/reader.js';
import { connectUpstream, type Upstream, type UpstreamTarget } from './connect.js';
import { poolErrors } from '../pool/pool-errors.js';
import {
  authMethodName,
  authentication,
  errorFields,
  parameterStatus,
  saslMechanisms,
  upstreamMessage,
  type ErrorFields,
} from '../protocol/decode.js';
import { untilReady } from './ready.js';

/** What makes two upstream sessions interchangeable: same server, database and role. */
export interface PoolKey {
  target: UpstreamTarget;
  database: string;
  role: string;
}

/** Identity of a key as a string (TLS settings other than on/off do not split a pool). */
const keyIds = new WeakMap<PoolKey, string>();

/** The pool entry a key belongs to (kept per key object: it is asked at every checkout and checkin). */
export function poolKeyId(key: PoolKey): string {
  let id = keyIds.get(key);
  if (id === undefined) {
    id = JSON.stringify([key.target.host, key.target.port, key.target.tls, key.database, key.role]);
    keyIds.set(key, id);
  }
  return id;
}

/** One authenticated upstream session, idle in the pool or lent to a client. */
export interface PooledSession {
  readonly key: PoolKey;
  readonly socket: Upstream['socket'];
  /** Reads the session's messages whenever no client is attached (see lend.ts). */
  readonly reader: PacketReader;
  readonly backendPid: number;
  readonly secretKey: number;
  /** ParameterStatus values as last reported by the backend. */
  readonly parameters: Map<string, string>;
  readonly createdAt: number;
  lastUsedAt: number;
  /** Set once the socket closed or failed, or the session's state is unknown: never reused. */
  broken: boolean;
  /**
   * The backend's start, microseconds since the epoch as decimal text (pgvpd.backend_start()):
   * with the pid it names this very backend in a switch grant (pool/grant.ts).
   */
  backendStart: string;
  /** The sequence of the last switch grant minted for this backend; each grant takes the next. */
  switchSeq: number;
  /**
   * Whose context the backend holds (pool/owner.ts: org, user and values as one string), or
   * undefined when none or not known: a checkout by the same owner needs no switch.
   */
  owner: string | undefined;
}

export interface LoginOptions {
  /** The connect_as role's password; undefined when the server trusts the role. */
  password: string | undefined;
  /**
   * SCRAM pass-through: the ClientKey a client's proof revealed and the verifier it was checked
   * against (auth/scram-client.ts). Used, before any password, when the server asks for SCRAM;
   * a server asking for MD5 or cleartext then needs the password.
   */
  scramKeys?: ScramKeys;
  /** application_name of the upstream session (default "pgvpd"). */
  applicationName?: string;
  /** Further startup parameters (e.g. client_encoding); user and database cannot be overridden. */
  parameters?: Record<string, string>;
  /** Bound on connect + TLS + authentication (default 30 s). */
  timeoutMs?: number;
  /**
   * Read the backend's start (pgvpd.backend_start(), which needs pgvpd's SQL in the database)
   * into `backendStart` before the session is returned; the pool of org mode does. Without it
   * `backendStart` stays '' and no switch grant can be minted for the session.
   */
  backendStart?: boolean;
}

/**
 * The pooled login could not read the backend's start: the upstream's SQLSTATE (42883 when
 * pgvpd's SQL predates pgvpd.backend_start()), else 08P01.
 */
function backendStartFailed(role: string, database: string, fields: ErrorFields): ProxyError {
  return new ProxyError(
    'upstream_backend_start_failed',
    fields.code ?? '08P01',
    fields.message,
    fields.hint,
    `pooled login of role "${role}" on database "${database}" could not read pgvpd.backend_start(): ${fields.message}`,
  );
}

export async function loginUpstream(key: PoolKey, options: LoginOptions): Promise<PooledSession> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  let upstream: Upstream | undefined;
  const race = { timedOut: false };
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      race.timedOut = true;
      upstream?.socket.destroy();
      reject(poolErrors.loginTimeout(key.target.host, key.target.port, timeoutMs));
    }, timeoutMs);
  });
  const work = (async () => {
    const opened = await connectUpstream(key.target);
    if (race.timedOut) {
      opened.socket.destroy();
      throw poolErrors.loginTimeout(key.target.host, key.target.port, timeoutMs);
    }
    upstream = opened;
    return handshake(key, opened, options);
  })();
  // Whichever loses the race must not surface as an unhandled rejection.
  work.catch(() => undefined);
  try {
    return await Promise.race([work, deadline]);
  } catch (error) {
    upstream?.socket.destroy();
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

async function handshake(
  key: PoolKey,
  upstream: Upstream,
  options: LoginOptions,
): Promise<PooledSession> {
  const { socket, reader } = upstream;
  // Once a client is piped the reader stops listening; this keeps a late error from crashing.
  socket.on('error', () => undefined);
  socket.write(
    serialize.startup({
      application_name: options.applicationName ?? 'pgvpd',
      ...options.parameters,
      user: key.role,
      database: key.database,
    }),
  );
  await authenticate(
    key,
    reader,
    (data) => socket.write(data),
    options.password,
    options.scramKeys,
  );

  const { backend, parameters } = await untilReady(reader, 'pooled login', (message) =>
    poolErrors.loginRefused(key.role, key.database, errorFields(message.body)),
  );
  const backendStart = options.backendStart
    ? await readBackendStart(key, upstream, parameters)
    : '';
  const now = Date.now();
  const session: PooledSession = {
    key,
    socket,
    reader,
    backendPid: backend.processId,
    secretKey: backend.secretKey,
    parameters,
    createdAt: now,
    lastUsedAt: now,
    broken: socket.destroyed,
    backendStart,
    switchSeq: 0,
    owner: undefined,
  };
  const markBroken = (): void => {
    session.broken = true;
  };
  socket.on('error', markBroken);
  socket.once('close', markBroken);
  return session;
}

/**
 * `select pgvpd.backend_start()` as one Query, read up to its ReadyForQuery: exactly one row of
 * one non-null decimal value, else the login fails (backendStartFailed, or 08P01 for an answer
 * out of shape).
 */
async function readBackendStart(
  key: PoolKey,
  upstream: Upstream,
  parameters: Map<string, string>,
): Promise<string> {
  upstream.socket.write(serialize.query('select pgvpd.backend_start()'));
  let failure: ErrorFields | undefined;
  const values: (string | null)[] = [];
  for (;;) {
    const message = await upstreamMessage(upstream.reader, 'the pooled login');
    switch (message.code) {
      case BackendCode.RowDescription:
      case BackendCode.CommandComplete:
      case BackendCode.NoticeResponse:
        continue;
      case BackendCode.ParameterStatus: {
        const [name, value] = parameterStatus(message.body);
        parameters.set(name, value);
        continue;
      }
      case BackendCode.DataRow:
        values.push(firstColumn(message.body));
        continue;
      case BackendCode.ErrorResponse:
        failure ??= errorFields(message.body);
        continue;
      case BackendCode.ReadyForQuery: {
        if (failure) throw backendStartFailed(key.role, key.database, failure);
        const [value] = values;
        if (values.length !== 1 || value === undefined || value === null || !/^[0-9]+$/.test(value))
          throw proxyErrors.upstreamProtocol(
            `pgvpd.backend_start() answered ${JSON.stringify(values)}, not one decimal value`,
          );
        return value;
      }
      default:
        throw proxyErrors.upstreamProtocol(
          `message type ${String.fromCharCode(message.code)} in answer to pgvpd.backend_start()`,
        );
    }
  }
}

/** A DataRow's first column as text (null for SQL NULL); 08P01 when the row is malformed. */
function firstColumn(body: Buffer): string | null {
  if (body.length < 2 || body.readInt16BE(0) < 1 || body.length < 6)
    throw proxyErrors.upstreamProtocol('DataRow without a column');
  const length = body.readInt32BE(2);
  if (length === -1) return null;
  if (length < 0 || 6 + length > body.length)
    throw proxyErrors.upstreamProtocol('DataRow column overruns its message');
  return body.toString('utf8', 6, 6 + length);
}

async function authenticate(
  key: PoolKey,
  reader: PacketReader,
  write: (data: Buffer) => void,
  password: string | undefined,
  scramKeys: ScramKeys | undefined,
): Promise<void> {
  const need = (method: string): string => {
    if (password === undefined) throw poolErrors.noPassword(key.role, method);
    return password;
  };
  let scram: ScramClient | undefined;
  let serverVerified = false;
  for (;;) {
    const message = await authMessage(key, reader);
    const { method, data } = authentication(message.body);
    switch (method) {
      case AuthCode.Ok:
        // A server that starts SCRAM must prove it knows the verifier before letting us in.
        if (scram && !serverVerified)
          throw proxyErrors.upstreamProtocol('SCRAM ended without the server signature');
        // Keys stand for a client's proof: they may open only a login the server checked. A
        // server that lets the role in unchecked (trust) would otherwise let a verifier, which
        // is not a password, stand for one.
        if (scramKeys !== undefined && !scram) throw poolErrors.passThroughUnchecked(key.role);
        return;
      case AuthCode.CleartextPassword:
        write(serialize.password(need('password')));
        continue;
      case AuthCode.MD5Password:
        write(serialize.password(md5Response(key.role, need('md5'), data.subarray(0, 4))));
        continue;
      case AuthCode.SASL: {
        const mechanisms = saslMechanisms(data);
        if (!mechanisms.includes('SCRAM-SHA-256'))
          throw proxyErrors.unsupportedAuth(mechanisms.join(', '));
        scram = new ScramClient(scramKeys ?? need('SCRAM-SHA-256'));
        write(serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', scram.firstMessage()));
        continue;
      }
      case AuthCode.SASLContinue: {
        const client = scram;
        if (!client) throw proxyErrors.upstreamProtocol('SASLContinue without SASL');
        const serverFirst = data.toString('utf8');
        write(
          serialize.sendSCRAMClientFinalMessage(
            scramStep(() => client.finalMessage(serverFirst), key.role),
          ),
        );
        continue;
      }
      case AuthCode.SASLFinal: {
        const client = scram;
        if (!client) throw proxyErrors.upstreamProtocol('SASLFinal without SASL');
        const serverFinal = data.toString('utf8');
        scramStep(() => {
          client.verifyFinal(serverFinal);
        });
        serverVerified = true;
        continue;
      }
      default:
        // Kerberos, GSSAPI, SSPI or a method PostgreSQL does not have.
        throw proxyErrors.unsupportedAuth(authMethodName(method));
    }
  }
}

/** An Authentication message; an ErrorResponse here is the upstream refusing the role. */
async function authMessage(key: PoolKey, reader: PacketReader): Promise<Message> {
  for (;;) {
    const message = await upstreamMessage(reader, 'pooled login');
    if (message.code === BackendCode.ErrorResponse)
      throw poolErrors.loginRefused(key.role, key.database, errorFields(message.body));
    if (message.code === BackendCode.NoticeResponse) continue;
    if (message.code !== BackendCode.Authentication || message.body.length < 4)
      throw proxyErrors.upstreamProtocol(
        `message type ${String.fromCharCode(message.code)} during authentication`,
      );
    return message;
  }
}

function scramStep<T>(step: () => T, role?: string): T {
  try {
    return step();
  } catch (error) {
    if (error instanceof ScramKeysStale && role !== undefined) throw poolErrors.keysStale(role);
    throw proxyErrors.upstreamProtocol((error as Error).message);
  }
}
