// Org mode's authentication, by the proxy: SCRAM-SHA-256 against the org user's stored verifier
// (auth/scram-server.ts). An unknown user gets a mock exchange (salt from the catalog's shared
// mock secret, the org and the name), so an unknown user and a wrong password both end in the
// same 28P01. Repeated failures hold back the answer, right or wrong, per (address, user), per
// user and per address (auth/throttle.ts).
import type { HeldAnswer } from '../auth/throttle.js';
import {
  ScramServer,
  decodeSASLInitialResponse,
  decodeSASLResponse,
  orgMockSecret,
  scramMechanism,
} from '../auth/scram-server.js';
import { ClientLeft } from '../edge/client-edge.js';
import { proxyErrors } from '../errors.js';
import * as send from '../protocol/encode.js';
import { ProtocolViolation } from '../protocol/reader.js';
import type { OrgParts } from '../runtime.js';
import type { Session } from '../session/lifecycle.js';
import type { CatalogOrg, CatalogUser } from './catalog.js';

/**
 * Runs the exchange. `onClientFirst` runs once the client's first message is in and the
 * server-first-message sent, while the client derives its key. The verdict is answered when the
 * login throttle lets it go, right or wrong alike; a refusal is thrown (28P01). Returns
 * AuthenticationSASLFinal + AuthenticationOk, for the caller to send with the rest of the
 * handshake. `signal` aborts a held answer when the session closes.
 */
export async function authenticateOrgUser(
  session: Session,
  org: OrgParts,
  target: { org: CatalogOrg; username: string; user: CatalogUser | undefined },
  onClientFirst: () => void,
  signal: AbortSignal,
): Promise<Buffer> {
  const scram = ScramServer.forUser(
    target.username,
    target.user?.verifier,
    orgMockSecret(org.mockSecret(), target.org.id),
  );
  const edge = session.edge;
  edge.write(send.authenticationSASL([scramMechanism]));
  try {
    const initial = decodeSASLInitialResponse((await edge.password()).body);
    const serverFirst = scram.receiveClientFirst(initial.mechanism, initial.data);
    // The server-first-message goes before anything is readied for a known user, so that it
    // does not come later for a known user than for an unknown one.
    edge.write(send.authenticationSASLContinue(serverFirst));
    onClientFirst();
    const outcome = scram.receiveClientFinal(decodeSASLResponse((await edge.password()).body));
    // Right or wrong, the answer is held back as long as a failure here would be.
    const held = org.throttle.settle(
      session.address,
      `${target.org.id}\0${target.username}`,
      outcome.ok,
    );
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
    return Buffer.concat([
      send.authenticationSASLFinal(outcome.serverFinal),
      send.authenticationOk(),
    ]);
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
