// One client connection's life, shared by both flows (app/flow.ts, org/flow.ts):
//   startup → route → auth → context → pipe → closed
// The flow runs the handshake and returns an attachment (session/attachment.ts); the lifecycle
// owns everything around it: the handshake timer, the phase, a CancelRequest arriving instead
// of a startup, the FATAL that ends a failed handshake (never a silent close), what a flow held
// before the attachment took over, draining, and describe() for the runtime's registry.
import type { Socket } from 'node:net';
import { ClientEdge, ClientLeft } from '../edge/client-edge.js';
import type { CancelTarget } from '../edge/cancel-keys.js';
import { ProxyError, proxyErrors } from '../errors.js';
import type { Logger } from '../logger.js';
import * as send from '../protocol/encode.js';
import type { Runtime } from '../runtime.js';
import type { Attachment, AttachmentDescription } from './attachment.js';

export type Phase = 'startup' | 'route' | 'auth' | 'context' | 'pipe' | 'closed';

/** Who the session is for, as far as the handshake has got. */
export interface SessionIdentity {
  /** App mode: the tenant of the username (null for a bypass user). Org mode: the org id. */
  tenant?: string | null;
  /** App mode: the upstream role. Org mode: the connect_as role. */
  role?: string;
  /** The org-mode username, or the app-mode context user if any. */
  user?: string | null;
  database?: string;
}

/** What the runtime's registry (and so an admin API) can read of a live session. */
export interface SessionDescription extends SessionIdentity {
  id: number;
  mode: 'app' | 'org';
  phase: Phase;
  /** Client address and port. */
  client: string;
  /** The backend serving the client, once attached. */
  backend: AttachmentDescription | undefined;
  ageMs: number;
}

/** The upstream already told the client why (e.g. 28P01): the session just closes. */
export class RelayedFailure extends Error {
  override name = 'RelayedFailure';
  constructor(readonly code: string | undefined) {
    super(`upstream refused: ${code ?? 'unknown'}`);
  }
}

/** A flow: the handshake from the first packet to an attachment (undefined: nothing to serve). */
export type Flow = (session: Session) => Promise<Attachment | undefined>;

let lastId = 0;

export class Session {
  readonly id = ++lastId;
  phase: Phase = 'startup';
  readonly edge: ClientEdge;
  readonly log: Logger;
  /** The client's address (`?` if the socket has none). */
  readonly address: string;
  readonly identity: SessionIdentity = {};
  private readonly client: string;
  private readonly started = Date.now();
  /** The accepted socket: what it read and wrote, TLS included, is counted at close. */
  private readonly raw: Socket;
  /** The connection was a CancelRequest, not a session. */
  private cancelRequest = false;
  private attachment: Attachment | undefined;
  private clientKey: { processId: number; secretKey: number } | undefined;
  /** Undo what the flow holds until an attachment takes over (newest first), run on close. */
  private readonly held: (() => void)[] = [];
  /** The refusal is sent; nothing more is. */
  private answered = false;
  private finished!: () => void;
  /** Resolves once the session is closed, whatever the reason. */
  readonly done = new Promise<void>((resolve) => (this.finished = resolve));

  constructor(
    socket: Socket,
    readonly mode: 'app' | 'org',
    readonly runtime: Runtime,
  ) {
    this.raw = socket;
    this.address = socket.remoteAddress ?? '?';
    this.client = `${this.address}:${String(socket.remotePort ?? 0)}`;
    this.log = runtime.logger.child({ client: this.client });
    this.edge = new ClientEdge(socket, {
      tls: runtime.tls,
      log: this.log,
      onCancel: (processId, secretKey) => this.forwardCancel(processId, secretKey),
      onTlsFailure: () => {
        runtime.metrics.tlsHandshakeFailed('client');
      },
    });
  }

  /** Runs the flow, then serves the client through its attachment until it ends. */
  async run(flow: Flow): Promise<void> {
    const seconds = this.runtime.config.handshake_timeout;
    const timer = setTimeout(() => {
      this.fail(proxyErrors.handshakeTimeout(this.phase, seconds));
    }, seconds * 1000);
    let attachment: Attachment | undefined;
    try {
      attachment = await flow(this);
    } catch (error) {
      this.fail(error);
    } finally {
      // Also on the early returns (a CancelRequest, a closed session): no timer outlives it.
      clearTimeout(timer);
    }
    if (!attachment) {
      this.close();
      return;
    }
    const end = await attachment.ended;
    this.log.info(
      { event: 'disconnect', reason: end, duration_ms: Date.now() - this.started },
      'session ended',
    );
    this.close();
    // The client's end goes out first: the release (a pooled backend's reset and restore) is
    // synchronous work that would otherwise run before the event loop writes the client's FIN,
    // and the client would wait for it (0.6 ms of every pooled close on this machine).
    await new Promise((resolve) => setImmediate(resolve));
    await attachment.release(end).catch((error: unknown) => {
      this.log.error({ event: 'error', err: error }, 'releasing the backend failed');
    });
  }

  /** Moves on, unless the session was closed meanwhile (timeout, shutdown, client gone). */
  enter(phase: Phase): void {
    if (this.phase === 'closed') throw new ClientLeft();
    this.phase = phase;
  }

  isClosed(): boolean {
    return this.phase === 'closed';
  }

  /** Registers what to undo if the session closes before an attachment takes over. */
  hold(undo: () => void): void {
    if (this.phase === 'closed') undo();
    else this.held.push(undo);
  }

  /**
   * The end of the handshake: the client gets `handshakeEnd` (its ParameterStatus etc.), a
   * proxy-issued BackendKeyData standing for `backend` and `ready`, in one write; from here on
   * the attachment serves it. Returns the attachment `attach` builds; throws ClientLeft if the
   * session closed meanwhile. What the flow holds is undone if `attach` throws.
   */
  attach(
    backend: CancelTarget,
    handshakeEnd: Buffer[],
    ready: Buffer,
    attach: () => Attachment,
  ): Attachment {
    this.enter('pipe');
    this.clientKey = this.runtime.cancelKeys.issue(backend);
    this.edge.write(
      Buffer.concat([
        ...handshakeEnd,
        send.backendKeyData(this.clientKey.processId, this.clientKey.secretKey),
        ready,
      ]),
    );
    const attachment = attach();
    this.held.length = 0;
    this.attachment = attachment;
    this.runtime.metrics.handshakeEnded('ok', (Date.now() - this.started) / 1000);
    return attachment;
  }

  /**
   * The end of a drain for a session still open: its client's socket is destroyed (not flushed)
   * and its attachment stopped, which ends the backend (dedicated) or returns it (pooled).
   */
  cut(): void {
    this.attachment?.stop();
    this.close();
    this.edge.socket.destroy();
  }

  /** Drain at shutdown: the attachment asks PostgreSQL to end its backend; a handshake ends here. */
  async terminate(): Promise<void> {
    if (this.phase === 'closed') return;
    if (this.attachment) {
      await this.attachment.terminate();
      return;
    }
    this.fail(proxyErrors.shuttingDown());
  }

  describe(): SessionDescription {
    return {
      id: this.id,
      mode: this.mode,
      phase: this.phase,
      client: this.client,
      ...this.identity,
      backend: this.attachment?.describe(),
      ageMs: Date.now() - this.started,
    };
  }

  private async forwardCancel(processId: number, secretKey: Buffer): Promise<void> {
    const known = await this.runtime.cancelKeys.forward(
      processId,
      secretKey,
      this.runtime.upstream,
    );
    this.log.info({ event: 'cancel', known }, 'cancel request');
    this.cancelRequest = true;
    this.runtime.metrics.cancelRequest(known ? 'forwarded' : 'unknown_key');
    this.close();
  }

  /** Answers the client (once) and closes. */
  fail(error: unknown): void {
    if (this.phase === 'closed') return;
    this.answer(error);
    this.close();
  }

  /**
   * Logs why the handshake ends and sends the client its FATAL, once: a ProxyError with its
   * SQLSTATE, anything unexpected as XX000; nothing for a client that left or a refusal the
   * upstream already relayed.
   */
  answer(error: unknown): void {
    if (this.answered || this.phase === 'closed') return;
    this.answered = true;
    const socket = this.edge.socket;
    if (error instanceof ProxyError) {
      this.runtime.metrics.refused(error.code, error.kind);
      this.log.warn(
        { event: 'refused', kind: error.kind, code: error.code, phase: this.phase },
        error.logMessage,
      );
      if (!socket.destroyed && socket.writable) {
        socket.write(
          send.errorResponse({
            severity: 'FATAL',
            code: error.code,
            message: error.message,
            hint: error.hint,
          }),
        );
      }
    } else if (error instanceof RelayedFailure || error instanceof ClientLeft) {
      if (error instanceof RelayedFailure) this.runtime.metrics.refused(error.code, 'relayed');
      this.log.debug({ event: 'closed', reason: error.name, phase: this.phase }, error.message);
    } else {
      this.log.error({ event: 'error', phase: this.phase, err: error }, 'unexpected failure');
      this.runtime.metrics.refused('XX000', 'internal');
      if (!socket.destroyed) {
        socket.write(
          send.errorResponse({
            severity: 'FATAL',
            code: 'XX000',
            message: 'internal error in pgvpd proxy',
          }),
        );
      }
    }
  }

  /**
   * Closes the client's side and undoes whatever the flow still held. An attachment sees its
   * client go and ends as it would if the client had left.
   */
  close(): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    if (this.clientKey)
      this.runtime.cancelKeys.revoke(this.clientKey.processId, this.clientKey.secretKey);
    this.edge.socket.end();
    this.edge.socket.destroySoon();
    if (!this.cancelRequest) {
      const seconds = (Date.now() - this.started) / 1000;
      if (!this.attachment) this.runtime.metrics.handshakeEnded('error', seconds);
      this.runtime.metrics.sessionClosed(seconds, this.raw.bytesRead, this.raw.bytesWritten);
    }
    try {
      for (const undo of this.held.splice(0).reverse()) {
        try {
          undo();
        } catch (error) {
          this.log.error({ event: 'error', err: error }, 'undoing a held resource failed');
        }
      }
    } finally {
      this.finished();
    }
  }
}
