// Authentication by the proxy (org mode, and app mode with pool_mode): SCRAM-SHA-256 against a
// stored verifier (auth/scram-server.ts): an org user's from the catalog, an application role's
// own from the database (pgvpd.app_role_verifier). A name the proxy will not serve gets a mock
// exchange (ScramServer.forUser / forUnknownUser, salt from a shared mock secret and the name),
// so it and a wrong password both end in the same 28P01. Repeated failures hold back the answer,
// right or wrong, per (address, user), per user and per address (auth/throttle.ts).
import type { AuthThrottle, HeldAnswer } from './throttle.js';
import { decodeSASLInitialResponse, decodeSASLResponse, scramMechanism } from './scram-server.js';
import type { ScramServer } from './scram-server.js';
import { ClientLeft } from '../edge/client-edge.js';
import { proxyErrors } from '../errors.js';
import * as send from '../protocol/encode.js';
import { ProtocolViolation } from '../protocol/reader.js';
import type { Session } from '../session/lifecycle.js';

/** A client the proxy authenticated. */
export interface Authenticated {
  /** AuthenticationSASLFinal + AuthenticationOk, to send with the rest of the handshake. */
  answer: Buffer;
  /** The ClientKey the proof revealed (SCRAM pass-through); never logged. */
  clientKey: Buffer;
}

/**
 * Runs the exchange `scram` (a real or a mock one; a promise of it may still be on its way while
 * the client answers the mechanism list: its failure is thrown once the client's first message
 * is in). `onClientFirst` runs once the client's first
 * message is in and the server-first-message sent, while the client derives its key. The verdict
 * is answered when the login throttle lets it go (`throttleKey`: who is logging in, e.g. org and
 * user), right or wrong alike; a refusal is thrown (28P01). `signal` aborts a held answer when
 * the session closes.
 */
export async function authenticateClient(
  session: Session,
  throttle: AuthThrottle,
  exchange: ScramServer | Promise<ScramServer>,
  throttleKey: string,
  onClientFirst: () => void,
  signal: AbortSignal,
): Promise<Authenticated> {
  const edge = session.edge;
  edge.write(send.authenticationSASL([scramMechanism]));
  try {
    const initial = decodeSASLInitialResponse((await edge.password()).body);
    const scram = await exchange;
    const serverFirst = scram.receiveClientFirst(initial.mechanism, initial.data);
    // The server-first-message goes before anything is readied for a known user, so that it
    // does not come later for a known user than for an unknown one.
    edge.write(send.authenticationSASLContinue(serverFirst));
    onClientFirst();
    const outcome = scram.receiveClientFinal(decodeSASLResponse((await edge.password()).body));
    // Right or wrong, the answer is held back as long as a failure here would be.
    const held = throttle.settle(session.address, throttleKey, outcome.ok);
    if (!outcome.ok) {
      if (held.ready) session.runtime.metrics.authThrottledAnswer();
      session.log.info(
        {
          event: 'auth',
          result: 'refused',
          delay_ms: held.delayMs,
          step_ms: held.stepMs,
          answer_at: held.atMs,
        },
        outcome.error.logMessage,
      );
      await hold(session, held, signal);
      throw outcome.error;
    }
    if (held.ready) {
      session.log.info(
        {
          event: 'auth',
          result: 'held',
          delay_ms: held.delayMs,
          step_ms: held.stepMs,
          answer_at: held.atMs,
        },
        'right password, answer held back by the login throttle',
      );
      await hold(session, held, signal);
    }
    return {
      answer: Buffer.concat([
        send.authenticationSASLFinal(outcome.serverFinal),
        send.authenticationOk(),
      ]),
      clientKey: outcome.clientKey,
    };
  } catch (error) {
    if (error instanceof ProtocolViolation) throw proxyErrors.protocolViolation(error.message);
    throw error;
  }
}

/** Waits until the throttle lets the answer go; the client leaving ends the wait (ClientLeft). */
async function hold(session: Session, held: HeldAnswer, signal: AbortSignal): Promise<void> {
  if (!held.ready) return;
  const socket = session.edge.socket;
  let leave: () => void = () => undefined;
  const left = new Promise<never>((_, reject) => {
    leave = () => {
      held.cancel();
      reject(new ClientLeft());
    };
  });
  socket.once('close', leave);
  signal.addEventListener('abort', leave, { once: true });
  if (signal.aborted || socket.destroyed) leave();
  try {
    await Promise.race([held.ready, left]);
  } finally {
    socket.off('close', leave);
    signal.removeEventListener('abort', leave);
  }
}
