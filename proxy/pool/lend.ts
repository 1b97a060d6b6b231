// Lending a checked-out session to a client: bytes flow both ways, upstream → client untouched,
// client → upstream through ClientFramer (which holds back the client's Terminate and knows
// whether the client left between messages). The loan ends when either side leaves or the proxy
// stops it; by then both sockets are detached and paused, and whatever the backend still sends
// waits for the pool's reader, which SessionPool.release() re-attaches before the reset.
import type { Duplex } from 'node:stream';
import type { Attachment, AttachmentEnd } from '../session/attachment.js';
import { sendCancel } from '../upstream/connect.js';
import type { ControlPools } from '../upstream/control.js';
import type { PooledSession } from '../upstream/login.js';
import { ClientFramer } from './client-framer.js';
import type { SessionPool } from './session-pool.js';

/** Why a loan ended: the attachment's reasons (session/attachment.ts). */
export type LoanEnd = AttachmentEnd;

export interface LoanResult {
  reason: LoanEnd;
  /**
   * The client left between two whole messages and the backend is still connected: the session
   * may go back through SessionPool.release() (whose reset still checks it). Otherwise discard.
   */
  reusable: boolean;
  /**
   * The last bytes the backend sent were a ReadyForQuery saying idle: most likely no transaction
   * is open, and the release's reset may leave out its ROLLBACK. A guess from the tail of the
   * last chunk (a row's data could end the same way): the reset checks it, and a wrong one ends
   * the session (pool/statements.ts).
   */
  idle: boolean;
}

/** Whether `chunk` ends with ReadyForQuery, idle: 'Z', length 5, 'I'. */
function endsIdle(chunk: Buffer): boolean {
  const n = chunk.length;
  return (
    n >= 6 &&
    chunk[n - 1] === 0x49 &&
    chunk[n - 2] === 5 &&
    chunk[n - 3] === 0 &&
    chunk[n - 4] === 0 &&
    chunk[n - 5] === 0 &&
    chunk[n - 6] === 0x5a
  );
}

export interface Loan {
  /** Settles once the loan has ended and both sockets are detached; never rejects. */
  readonly ended: Promise<LoanResult>;
  /** Ends the loan from the proxy's side. */
  stop(): void;
}

/**
 * Attaches a checked-out session to a client. `clientEarly`: bytes the client sent after the
 * handshake that were already read (PacketReader.release() on the client's reader); they go first.
 * The caller keeps its own 'error' listener on the client and closes the client when the loan
 * ends; the loan never closes either socket.
 */
export function lend(session: PooledSession, client: Duplex, clientEarly?: Buffer): Loan {
  const upstream = session.socket;
  const framer = new ClientFramer();
  const state = { done: false, idle: true };
  let settle: (result: LoanResult) => void = () => undefined;
  const ended = new Promise<LoanResult>((resolve) => (settle = resolve));

  const resumeUpstream = (): void => {
    if (!state.done) upstream.resume();
  };
  const resumeClient = (): void => {
    if (!state.done) client.resume();
  };
  const fromUpstream = (chunk: Buffer): void => {
    state.idle = endsIdle(chunk);
    if (!client.write(chunk)) {
      upstream.pause();
      client.once('drain', resumeUpstream);
    }
  };
  const fromClient = (chunk: Buffer): void => {
    if (state.done) return;
    const { forward, end } = framer.push(chunk);
    if (forward.length > 0 && !upstream.write(forward)) {
      client.pause();
      upstream.once('drain', resumeClient);
    }
    if (end === 'terminate') finish('client-terminated');
    else if (end === 'violation') finish('client-violation');
  };
  const clientGone = (): void => {
    finish('client-closed');
  };
  const upstreamGone = (): void => {
    finish('upstream-closed');
  };

  function finish(reason: LoanEnd): void {
    if (state.done) return;
    state.done = true;
    client.off('data', fromClient);
    client.off('end', clientGone);
    client.off('close', clientGone);
    client.off('error', clientGone);
    client.off('drain', resumeUpstream);
    upstream.off('data', fromUpstream);
    upstream.off('end', upstreamGone);
    upstream.off('close', upstreamGone);
    upstream.off('error', upstreamGone);
    upstream.off('drain', resumeClient);
    client.pause();
    upstream.pause();
    const connected = !session.broken && !upstream.destroyed && !upstream.readableEnded;
    settle({
      reason,
      reusable:
        reason !== 'upstream-closed' &&
        reason !== 'client-violation' &&
        connected &&
        framer.atBoundary,
      idle: state.idle,
    });
  }

  const late = session.reader.release();
  if (late.length > 0) {
    state.idle = endsIdle(late);
    client.write(late);
  }
  if (session.broken || upstream.destroyed || upstream.readableEnded) {
    finish('upstream-closed');
    return { ended, stop: () => undefined };
  }
  if (clientEarly && clientEarly.length > 0) fromClient(clientEarly);
  if (!state.done && (client.destroyed || client.readableEnded)) finish('client-closed');
  if (!state.done) {
    client.on('data', fromClient);
    client.once('end', clientGone);
    client.once('close', clientGone);
    client.once('error', clientGone);
    upstream.on('data', fromUpstream);
    upstream.once('end', upstreamGone);
    upstream.once('close', upstreamGone);
    upstream.once('error', upstreamGone);
    client.resume();
    upstream.resume();
  }
  return {
    ended,
    stop: () => {
      finish('stopped');
    },
  };
}

export interface LoanAttachmentOptions {
  pool: SessionPool;
  session: PooledSession;
  client: Duplex;
  /** Bytes the client sent after its handshake that the proxy had already read. */
  clientEarly: Buffer;
  control: ControlPools;
  /** Whether the session's server is the proxy's configured upstream (no server to name). */
  onDefaultUpstream: boolean;
}

/**
 * A loan as the session's attachment (session/attachment.ts). When the client is gone the
 * session goes back to the pool (reset there) if the loan left it reusable, and is discarded
 * otherwise; a client that vanished without Terminate, perhaps with a statement still running,
 * has that statement cancelled first, so that the backend does not go on working for nobody and
 * the reset happens now rather than after the pool's reset timeout.
 */
export function loanAttachment(options: LoanAttachmentOptions): Attachment {
  const { pool, session } = options;
  const loan = lend(session, options.client, options.clientEarly);
  let result: LoanResult | undefined;
  const target = session.key.target;
  return {
    ended: loan.ended.then((ended) => {
      result = ended;
      return ended.reason;
    }),
    stop: () => {
      loan.stop();
    },
    async terminate() {
      const ended = await options.control
        .terminate(
          session.key.database,
          session.backendPid,
          options.onDefaultUpstream ? undefined : { host: target.host, port: target.port },
        )
        .catch(() => false);
      if (!ended) loan.stop();
    },
    async release(end) {
      if (end === 'client-closed')
        await sendCancel(target, session.backendPid, session.secretKey).catch(() => undefined);
      if (result?.reusable === true) await pool.release(session, result.idle);
      else pool.discard(session, end);
    },
    describe: () => ({
      kind: 'loan',
      backendPid: session.backendPid,
      database: session.key.database,
      role: session.key.role,
    }),
  };
}
