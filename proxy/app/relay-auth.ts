// App mode's authentication: the upstream PostgreSQL authenticates the client, the proxy relays.
// Cleartext and SCRAM challenges go to the client as they came and its answers go back. Two
// cannot be relayed, and the proxy answers them itself with the client's password, asked for in
// cleartext (only over TLS unless allow_password_without_tls): MD5, whose hash covers the
// username the proxy rewrote, and SCRAM when both legs are TLS, where the client would bind the
// exchange to the proxy's certificate, which upstream cannot check. Kerberos, GSSAPI and SSPI
// are refused (28000). An upstream ErrorResponse goes to the client as it came (RelayedFailure).
import { serialize } from '../protocol/encode.js';
import { md5Response } from '../auth/md5.js';
import { ScramClient } from '../auth/scram-client.js';
import { proxyErrors } from '../errors.js';
import { AuthCode, BackendCode } from '../protocol/codes.js';
import {
  authMethodName,
  authentication,
  errorFields,
  saslMechanisms,
  upstreamMessage,
} from '../protocol/decode.js';
import * as send from '../protocol/encode.js';
import type { Message } from '../protocol/reader.js';
import { RelayedFailure, type Session } from '../session/lifecycle.js';
import type { Upstream } from '../upstream/connect.js';

/** The client is told what upstream said; the session ends without a word of its own. */
export function relayedFailure(session: Session, message: Message): RelayedFailure {
  session.edge.write(message.raw);
  const code = errorFields(message.body).code;
  session.log.info({ event: 'auth', result: 'refused', code }, 'upstream refused the session');
  return new RelayedFailure(code);
}

/** Runs upstream's authentication of `role` with the client until AuthenticationOk. */
export async function relayAuthentication(
  session: Session,
  upstream: Upstream,
  role: string,
  /** The upstream's first answer, when the caller has read it already. */
  first?: Message,
): Promise<void> {
  const edge = session.edge;
  let early = first;
  for (;;) {
    const message = early ?? (await upstreamMessage(upstream.reader, session.phase));
    early = undefined;
    switch (message.code) {
      case BackendCode.ErrorResponse:
        throw relayedFailure(session, message);
      case BackendCode.NoticeResponse:
        edge.write(message.raw);
        continue;
      case BackendCode.Authentication:
        break;
      default:
        throw proxyErrors.upstreamProtocol(
          `message type ${String.fromCharCode(message.code)} during authentication`,
        );
    }
    const { method, data } = authentication(message.body);
    switch (method) {
      case AuthCode.Ok:
        edge.write(message.raw);
        return;
      case AuthCode.CleartextPassword:
        edge.write(message.raw);
        upstream.socket.write((await edge.password()).raw);
        continue;
      case AuthCode.MD5Password: {
        const password = await askPassword(session, 'md5');
        upstream.socket.write(serialize.password(md5Response(role, password, data.subarray(0, 4))));
        continue;
      }
      case AuthCode.SASL: {
        const mechanisms = saslMechanisms(data);
        if (!mechanisms.includes('SCRAM-SHA-256'))
          throw proxyErrors.unsupportedAuth(mechanisms.join(', '));
        if (edge.tls && session.runtime.upstream.tls) {
          await scramWithPassword(session, upstream);
        } else {
          // Channel binding would bind to the proxy's certificate, which upstream cannot check.
          edge.write(send.authenticationSASL(['SCRAM-SHA-256']));
          upstream.socket.write((await edge.password()).raw);
        }
        continue;
      }
      case AuthCode.SASLContinue:
        edge.write(message.raw);
        upstream.socket.write((await edge.password()).raw);
        continue;
      case AuthCode.SASLFinal:
        edge.write(message.raw);
        continue;
      default:
        // Kerberos, GSSAPI, SSPI or a method PostgreSQL does not have.
        throw proxyErrors.unsupportedAuth(authMethodName(method));
    }
  }
}

/** The client's password, asked for in cleartext: over TLS only, unless configured otherwise. */
async function askPassword(session: Session, method: string): Promise<string> {
  if (!session.edge.tls && !session.runtime.config.allow_password_without_tls)
    throw proxyErrors.passwordNeedsTls(method);
  session.edge.write(send.authenticationCleartextPassword());
  const message = await session.edge.password();
  const end = message.body.indexOf(0);
  return message.body.toString('utf8', 0, end < 0 ? message.body.length : end);
}

async function scramWithPassword(session: Session, upstream: Upstream): Promise<void> {
  const scram = new ScramClient(await askPassword(session, 'SCRAM-SHA-256 over TLS on both legs'));
  upstream.socket.write(
    serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', scram.firstMessage()),
  );
  const first = await expectAuth(session, upstream, AuthCode.SASLContinue);
  upstream.socket.write(serialize.sendSCRAMClientFinalMessage(scram.finalMessage(first)));
  const final = await expectAuth(session, upstream, AuthCode.SASLFinal);
  try {
    scram.verifyFinal(final);
  } catch (error) {
    throw proxyErrors.upstreamProtocol((error as Error).message);
  }
}

/** The data of the next Authentication message, which must be of `method`. */
async function expectAuth(session: Session, upstream: Upstream, method: AuthCode): Promise<string> {
  const message = await upstreamMessage(upstream.reader, session.phase);
  if (message.code === BackendCode.ErrorResponse) throw relayedFailure(session, message);
  if (message.code !== BackendCode.Authentication)
    throw proxyErrors.upstreamProtocol('unexpected message during SCRAM exchange');
  const auth = authentication(message.body);
  if (auth.method !== method)
    throw proxyErrors.upstreamProtocol('unexpected message during SCRAM exchange');
  return auth.data.toString('utf8');
}
