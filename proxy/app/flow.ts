// One client connection, as a state machine:
//   startup → route → auth → context → pipe → closed
// Every failure before `pipe` ends in a FATAL ErrorResponse with its SQLSTATE (proxy/errors.ts),
// never a silent close. Nothing the client sends after authentication reaches the upstream
// before the signed context is set; after that, bytes flow through pipe() with no per-message work.
import type { Socket } from 'node:net';
import type { SecureContext } from 'node:tls';
import { Parser } from 'pg-protocol/dist/parser';
import { serialize } from 'pg-protocol/dist/serializer';
import type { CancelKeys } from '../edge/cancel-keys.js';
import { ClientEdge, ClientLeft } from '../edge/client-edge.js';
import type { ProxyConfig } from '../config.js';
import type { ControlPools } from '../upstream/control.js';
import { ProxyError, proxyErrors } from '../errors.js';
import type { Logger } from '../logger.js';
import { ScramClient, md5Response } from '../auth/password-answers.js';
import { AuthCode, BackendCode } from '../protocol/codes.js';
import { PeerClosed, type Message } from '../protocol/reader.js';
import * as send from '../protocol/encode.js';
import type { AppRoute } from './route.js';
import { connectUpstream, type Upstream, type UpstreamTarget } from '../upstream/connect.js';

export const phases = ['startup', 'route', 'auth', 'context', 'pipe', 'closed'] as const;
export type Phase = (typeof phases)[number];

export interface SessionDeps {
  config: ProxyConfig;
  route: (username: string) => AppRoute;
  /** Whether a client address is in bypass_networks (compileNetworks). */
  bypassAllowed: (address: string | undefined) => boolean;
  upstream: UpstreamTarget;
  control: ControlPools | undefined;
  cancelKeys: CancelKeys;
  tls: SecureContext | undefined;
  logger: Logger;
}

/** The upstream already told the client why (e.g. 28P01); the session just closes. */
class RelayedFailure extends Error {
  override name = 'RelayedFailure';
  constructor(readonly code: string | undefined) {
    super(`upstream refused: ${code ?? 'unknown'}`);
  }
}

// The token goes in through pgvpd.set_context, as a bind parameter: one function on both context
// paths. It checks the token against the record issue_context wrote; where the server has loaded
// the guard module it also copies the verified values into settings no client can set, which the
// built-in set_config could not do (the module makes pgvpd.* superuser-only).
const setContextQuery = 'select pgvpd.set_context($1)';

export class ClientSession {
  phase: Phase = 'startup';
  private readonly edge: ClientEdge;
  private upstream: Upstream | undefined;
  private route: AppRoute | undefined;
  private database = '';
  private backend: { processId: number; secretKey: number } | undefined;
  private clientKey: { processId: number; secretKey: number } | undefined;
  private readonly started = Date.now();
  private readonly log: Logger;
  private finished!: () => void;
  /** Resolves once the session is closed, whatever the reason. */
  readonly done = new Promise<void>((resolve) => (this.finished = resolve));

  constructor(
    socket: Socket,
    private readonly deps: SessionDeps,
  ) {
    this.log = deps.logger.child({
      client: `${socket.remoteAddress ?? '?'}:${String(socket.remotePort ?? 0)}`,
    });
    this.edge = new ClientEdge(socket, {
      tls: deps.tls,
      log: this.log,
      onCancel: (processId, secretKey) => this.forwardCancel(processId, secretKey),
    });
  }

  async run(): Promise<void> {
    const seconds = this.deps.config.handshake_timeout;
    const timer = setTimeout(() => {
      this.fail(proxyErrors.handshakeTimeout(this.phase, seconds));
    }, seconds * 1000);
    try {
      const parameters = await this.edge.startup();
      if (parameters === undefined || this.phase === 'closed') return;
      this.enter('route');
      const username = parameters.get('user');
      if (username === undefined || username === '') throw proxyErrors.noUser();
      const route = this.deps.route(username);
      // Upstream sees the proxy's address, so pg_hba.conf cannot tell where a bypass user is.
      const address = this.edge.socket.remoteAddress;
      if (route.kind === 'bypass' && !this.deps.bypassAllowed(address))
        throw proxyErrors.bypassNotFromHere(username, address ?? '?');
      this.route = route;
      this.database = parameters.get('database') || route.role;
      this.log.info(
        {
          event: 'connect',
          role: route.role,
          tenant: route.kind === 'tenant' ? route.tenant : null,
          database: this.database,
        },
        'client connected',
      );
      this.enter('auth');
      const upstream = await connectUpstream(this.deps.upstream);
      if (this.phase !== 'auth') {
        upstream.socket.destroy();
        return;
      }
      this.upstream = upstream;
      upstream.socket.on('error', () => undefined);
      const startup: Record<string, string> = {};
      for (const [name, value] of parameters) startup[name] = value;
      startup.user = route.role;
      startup.database = this.database;
      upstream.socket.write(serialize.startup(startup));
      await this.authenticate(upstream);
      this.log.info({ event: 'auth', result: 'ok' }, 'authenticated upstream');
      this.enter('context');
      const held = await this.collectUntilReady(upstream);
      if (route.kind === 'tenant') await this.setContext(upstream, route);
      this.enter('pipe');
      clearTimeout(timer);
      this.release(held);
      this.pipe(upstream);
    } catch (error) {
      this.fail(error);
    } finally {
      // Also on the early returns (a CancelRequest, a closed session): no timer outlives run().
      clearTimeout(timer);
    }
  }

  /** Moves on, unless the session was closed meanwhile (timeout, shutdown, client gone). */
  private enter(phase: Phase): void {
    if (this.phase === 'closed') throw new ClientLeft();
    this.phase = phase;
  }

  /** Drain at shutdown: ask PostgreSQL to end the backend, or end the handshake ourselves. */
  async terminate(): Promise<void> {
    if (this.phase === 'closed') return;
    if (this.phase === 'pipe' && this.backend && this.deps.control) {
      const ended = await this.deps.control
        .terminate(this.database, this.backend.processId)
        .catch(() => false);
      if (ended) return;
      // No right to end it (e.g. a bypass superuser): close the sockets.
      this.close();
      return;
    }
    this.fail(proxyErrors.shuttingDown());
  }

  private async forwardCancel(processId: number, secretKey: Buffer): Promise<void> {
    const known = await this.deps.cancelKeys.forward(processId, secretKey, this.deps.upstream);
    this.log.info({ event: 'cancel', known }, 'cancel request');
    this.close();
  }

  // ── auth ─────────────────────────────────────────────────────────────────────────────────
  private async authenticate(upstream: Upstream): Promise<void> {
    for (;;) {
      const message = await this.fromUpstream(upstream);
      switch (message.code) {
        case BackendCode.ErrorResponse as number:
          throw this.relayedFailure(message);
        case BackendCode.NoticeResponse as number:
          this.edge.socket.write(message.raw);
          continue;
        case BackendCode.Authentication as number:
          break;
        default:
          throw proxyErrors.upstreamProtocol(
            `message type ${String.fromCharCode(message.code)} during authentication`,
          );
      }
      const method = message.body.readInt32BE(0);
      switch (method) {
        case AuthCode.Ok as number:
          this.edge.socket.write(message.raw);
          return;
        case AuthCode.CleartextPassword as number:
          this.edge.socket.write(message.raw);
          upstream.socket.write((await this.edge.password()).raw);
          continue;
        case AuthCode.MD5Password as number: {
          const password = await this.askPassword('md5');
          upstream.socket.write(
            serialize.password(
              md5Response(this.route?.role ?? '', password, message.body.subarray(4, 8)),
            ),
          );
          continue;
        }
        case AuthCode.SASL as number: {
          const mechanisms = message.body.toString('utf8', 4).split('\0').filter(Boolean);
          if (!mechanisms.includes('SCRAM-SHA-256'))
            throw proxyErrors.unsupportedAuth(mechanisms.join(', '));
          if (this.edge.tls && this.deps.upstream.tls) {
            await this.scramWithPassword(upstream);
          } else {
            // Channel binding would bind to the proxy's certificate, which upstream cannot check.
            this.edge.socket.write(send.authenticationSASL(['SCRAM-SHA-256']));
            upstream.socket.write((await this.edge.password()).raw);
          }
          continue;
        }
        case AuthCode.SASLContinue as number:
          this.edge.socket.write(message.raw);
          upstream.socket.write((await this.edge.password()).raw);
          continue;
        case AuthCode.SASLFinal as number:
          this.edge.socket.write(message.raw);
          continue;
        case AuthCode.KerberosV5 as number:
          throw proxyErrors.unsupportedAuth('Kerberos V5');
        case AuthCode.GSS as number:
        case AuthCode.GSSContinue as number:
          throw proxyErrors.unsupportedAuth('GSSAPI');
        case AuthCode.SSPI as number:
          throw proxyErrors.unsupportedAuth('SSPI');
        default:
          throw proxyErrors.unsupportedAuth(`method ${String(method)}`);
      }
    }
  }

  /**
   * MD5, and SCRAM when both legs are TLS, cannot be relayed: the proxy asks the client for the
   * password and answers upstream itself. Only over TLS unless configured otherwise.
   */
  private async askPassword(method: string): Promise<string> {
    if (!this.edge.tls && !this.deps.config.allow_password_without_tls)
      throw proxyErrors.passwordNeedsTls(method);
    this.edge.socket.write(send.authenticationCleartextPassword());
    const message = await this.edge.password();
    const end = message.body.indexOf(0);
    return message.body.toString('utf8', 0, end < 0 ? message.body.length : end);
  }

  private async scramWithPassword(upstream: Upstream): Promise<void> {
    const scram = new ScramClient(await this.askPassword('SCRAM-SHA-256 over TLS on both legs'));
    upstream.socket.write(
      serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', scram.firstMessage()),
    );
    const first = await this.expectAuth(upstream, AuthCode.SASLContinue);
    upstream.socket.write(
      serialize.sendSCRAMClientFinalMessage(scram.finalMessage(first.body.toString('utf8', 4))),
    );
    const final = await this.expectAuth(upstream, AuthCode.SASLFinal);
    try {
      scram.verifyFinal(final.body.toString('utf8', 4));
    } catch (error) {
      throw proxyErrors.upstreamProtocol((error as Error).message);
    }
  }

  private async expectAuth(upstream: Upstream, code: AuthCode): Promise<Message> {
    const message = await this.fromUpstream(upstream);
    if (message.code === (BackendCode.ErrorResponse as number)) throw this.relayedFailure(message);
    if (
      message.code !== (BackendCode.Authentication as number) ||
      message.body.readInt32BE(0) !== (code as number)
    ) {
      throw proxyErrors.upstreamProtocol('unexpected message during SCRAM exchange');
    }
    return message;
  }

  private async fromUpstream(upstream: Upstream): Promise<Message> {
    try {
      return await upstream.reader.message(1024 * 1024);
    } catch (error) {
      if (error instanceof PeerClosed) throw proxyErrors.upstreamClosed(this.phase);
      throw proxyErrors.upstreamProtocol((error as Error).message);
    }
  }

  private relayedFailure(message: Message): RelayedFailure {
    this.edge.socket.write(message.raw);
    const code = parseError(message).code;
    this.log.info({ event: 'auth', result: 'refused', code }, 'upstream refused the session');
    return new RelayedFailure(code);
  }

  // ── context ──────────────────────────────────────────────────────────────────────────────
  /** Holds back ParameterStatus, BackendKeyData and ReadyForQuery until the context is set. */
  private async collectUntilReady(upstream: Upstream): Promise<Buffer[]> {
    const held: Buffer[] = [];
    for (;;) {
      const message = await this.fromUpstream(upstream);
      switch (message.code) {
        case BackendCode.ParameterStatus as number:
        case BackendCode.NoticeResponse as number:
          held.push(message.raw);
          continue;
        case BackendCode.BackendKeyData as number:
          if (message.body.length !== 8)
            throw proxyErrors.upstreamProtocol('BackendKeyData of unexpected length');
          this.backend = {
            processId: message.body.readInt32BE(0),
            secretKey: message.body.readInt32BE(4),
          };
          continue;
        case BackendCode.ReadyForQuery as number:
          if (!this.backend)
            throw proxyErrors.upstreamProtocol('no BackendKeyData before ReadyForQuery');
          held.push(message.raw);
          return held;
        case BackendCode.ErrorResponse as number:
          throw this.relayedFailure(message);
        default:
          throw proxyErrors.upstreamProtocol(
            `message type ${String.fromCharCode(message.code)} before ReadyForQuery`,
          );
      }
    }
  }

  private async setContext(
    upstream: Upstream,
    route: AppRoute & { kind: 'tenant' },
  ): Promise<void> {
    const control = this.deps.control;
    if (!control) throw proxyErrors.contextFailed(undefined, 'no control_url configured');
    if (!this.backend) throw proxyErrors.upstreamProtocol('no BackendKeyData');
    let token: string;
    try {
      token = await control.issue({
        mode: 'app',
        database: this.database,
        backendPid: this.backend.processId,
        tenant: route.tenant,
        user: route.user,
        values: route.values,
      });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      throw proxyErrors.contextFailed(
        typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined,
        `issue_context: ${(error as Error).message}`,
      );
    }
    upstream.socket.write(
      Buffer.concat([
        serialize.parse({ text: setContextQuery }),
        serialize.bind({ values: [token] }),
        serialize.execute(),
        serialize.sync(),
      ]),
    );
    let failure: { code?: string; message: string } | undefined;
    for (;;) {
      const message = await this.fromUpstream(upstream);
      if (message.code === (BackendCode.ErrorResponse as number)) failure = parseError(message);
      if (message.code === (BackendCode.ReadyForQuery as number)) break;
    }
    if (failure) throw proxyErrors.contextFailed(failure.code, `set_context: ${failure.message}`);
  }

  private release(held: Buffer[]): void {
    const ready = held.pop();
    if (!ready || !this.backend) throw proxyErrors.upstreamProtocol('no ReadyForQuery');
    this.clientKey = this.deps.cancelKeys.issue(this.backend);
    this.edge.socket.write(
      Buffer.concat([
        ...held,
        send.backendKeyData(this.clientKey.processId, this.clientKey.secretKey),
        ready,
      ]),
    );
  }

  // ── pipe ─────────────────────────────────────────────────────────────────────────────────
  private pipe(upstream: Upstream): void {
    const client = this.edge.socket;
    const server = upstream.socket;
    const early = this.edge.reader.release();
    const late = upstream.reader.release();
    if (late.length > 0) client.write(late);
    if (early.length > 0) server.write(early);
    client.pipe(server);
    server.pipe(client);
    const end = (): void => {
      this.close();
    };
    client.on('error', end);
    server.on('error', end);
    client.once('close', end);
    server.once('close', end);
    // A half-closed client (FIN) is done: PostgreSQL has no half-duplex sessions.
    client.once('end', end);
    server.once('end', end);
    this.log.debug({ event: 'pipe' }, 'session piped');
  }

  // ── closed ───────────────────────────────────────────────────────────────────────────────
  private fail(error: unknown): void {
    if (this.phase === 'closed') return;
    if (error instanceof ProxyError) {
      this.log.warn(
        { event: 'refused', kind: error.kind, code: error.code, phase: this.phase },
        error.logMessage,
      );
      if (!this.edge.socket.destroyed && this.edge.socket.writable) {
        this.edge.socket.write(
          send.errorResponse({
            severity: 'FATAL',
            code: error.code,
            message: error.message,
            hint: error.hint,
          }),
        );
      }
    } else if (error instanceof RelayedFailure || error instanceof ClientLeft) {
      this.log.debug({ event: 'closed', reason: error.name, phase: this.phase }, error.message);
    } else {
      this.log.error({ event: 'error', phase: this.phase, err: error }, 'unexpected failure');
      if (!this.edge.socket.destroyed) {
        this.edge.socket.write(
          send.errorResponse({
            severity: 'FATAL',
            code: 'XX000',
            message: 'internal error in pgvpd proxy',
          }),
        );
      }
    }
    this.close();
  }

  close(): void {
    if (this.phase === 'closed') return;
    const wasPiped = this.phase === 'pipe';
    this.phase = 'closed';
    if (this.clientKey)
      this.deps.cancelKeys.revoke(this.clientKey.processId, this.clientKey.secretKey);
    this.edge.socket.end();
    this.edge.socket.destroySoon();
    if (this.upstream) {
      const socket = this.upstream.socket;
      if (!wasPiped && !socket.destroyed) socket.end(serialize.end());
      else socket.destroy();
    }
    if (wasPiped)
      this.log.info(
        { event: 'disconnect', duration_ms: Date.now() - this.started },
        'session ended',
      );
    this.finished();
  }
}

function parseError(message: Message): { code?: string; message: string } {
  let parsed: { code?: string; message: string } = { message: 'unknown error' };
  new Parser().parse(message.raw, (msg) => {
    const error = msg as { code?: string; message?: string };
    parsed = {
      ...(error.code === undefined ? {} : { code: error.code }),
      message: error.message ?? 'unknown error',
    };
  });
  return parsed;
}
