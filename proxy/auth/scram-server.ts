// The server side of SCRAM-SHA-256 (RFC 5802 §5, §7; RFC 7677), as PostgreSQL's auth-scram.c
// does it, for org mode, where the proxy authenticates end users itself against catalog
// verifiers (scram-verifier.ts). The session drives one ScramServer per attempt:
//
//   AuthenticationSASL ["SCRAM-SHA-256"]  →  SASLInitialResponse  → receiveClientFirst()
//   AuthenticationSASLContinue (server-first)  →  SASLResponse     → receiveClientFinal()
//   AuthenticationSASLFinal (server-final) + AuthenticationOk, or 28P01
//
// As in PostgreSQL: no channel binding is offered (no -PLUS), so the gs2 header is "n" or "y" and
// "p=" is refused; the user name in "n=" is ignored (the startup packet's user counts); an unknown
// user gets a mock exchange with a salt derived from its name, which fails only at the proof
// check, after the same computation as a wrong password; and a failed proof is reported with the
// message PostgreSQL uses for every password method, never with RFC 5802's "e=invalid-proof".
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { ProxyError } from '../errors.js';
import { ProtocolViolation } from '../protocol/reader.js';
import {
  type ScramVerifier,
  decodeBase64,
  defaultIterations,
  keyLength,
  parseVerifier,
  saltLength,
} from './scram-verifier.js';

/** The only mechanism the proxy offers in AuthenticationSASL. */
export const scramMechanism = 'SCRAM-SHA-256';

/** PostgreSQL's SCRAM_RAW_NONCE_LEN. */
const serverNonceBytes = 18;

/** A malformed or out-of-order SCRAM message; the session answers it with 08P01. */
export class ScramProtocolError extends ProtocolViolation {
  override name = 'ScramProtocolError';
}

/**
 * 28P01 with PostgreSQL's wording, the same for a wrong password and an unknown user; only the
 * log message says which.
 */
export function authenticationFailed(username: string, reason: string): ProxyError {
  const message = `password authentication failed for user "${username}"`;
  return new ProxyError(
    'password_authentication_failed',
    '28P01',
    message,
    undefined,
    `${message}: ${reason}`,
  );
}

/** What the client-final-message led to. */
export type ScramOutcome =
  | {
      ok: true;
      /** server-final-message, for AuthenticationSASLFinal. */
      serverFinal: string;
      /**
       * The ClientKey the proof revealed (H(ClientKey) = StoredKey): with the verifier, what a
       * SCRAM pass-through login upstream needs (auth/scram-client.ts ScramKeys). Never logged.
       */
      clientKey: Buffer;
    }
  | { ok: false; /** 28P01, to send as FATAL. */ error: ProxyError };

/**
 * A per-process secret for the mock salts of unknown users: 32 random bytes. Org mode uses the
 * catalog's secret, shared by every proxy of the catalog, and this one only when there is none.
 */
export function newMockSecret(): Buffer {
  return randomBytes(32);
}

/**
 * The mock-salt secret of one org: org users are per org, so an unknown name's salt must differ
 * between orgs (were it the same, comparing one name's salts across orgs would tell in which org
 * it is real).
 */
export function orgMockSecret(secret: Buffer, orgId: string): Buffer {
  return createHmac('sha256', secret).update(`org\0${orgId}`, 'utf8').digest();
}

/** The mock salt of an unknown user: deterministic per name and proxy, like scram_mock_salt(). */
export function mockSalt(username: string, secret: Buffer): Buffer {
  return createHmac('sha256', secret).update(username, 'utf8').digest().subarray(0, saltLength);
}

type Phase =
  | { name: 'awaiting-first' }
  | { name: 'awaiting-final'; first: ClientFirst; serverFirst: string; nonce: string }
  | { name: 'done' };

export class ScramServer {
  private phase: Phase = { name: 'awaiting-first' };

  private constructor(
    private readonly username: string,
    private readonly verifier: ScramVerifier,
    /** Why this exchange must fail whatever the proof, for the log; undefined for a real one. */
    private readonly doomed: string | undefined,
  ) {}

  /** An exchange against a stored verifier. */
  static forVerifier(username: string, verifier: ScramVerifier): ScramServer {
    return new ScramServer(username, verifier, undefined);
  }

  /**
   * A mock exchange for a user the catalog does not know: indistinguishable on the wire from a
   * real one (salt of the same length, deterministic per name so repeated attempts see the same
   * one; the same iteration count), and it fails at the final step like a wrong password.
   * `secret` comes from newMockSecret(), once per proxy; `iterations` should be the count the
   * catalog's verifiers use.
   */
  static forUnknownUser(
    username: string,
    secret: Buffer,
    iterations: number = defaultIterations,
  ): ScramServer {
    return ScramServer.mock(username, secret, iterations, 'no such user');
  }

  /**
   * The exchange for a catalog lookup's result: a real one for a valid verifier, a mock one when
   * there is no row (undefined or null) or the stored text is not a SCRAM-SHA-256 verifier.
   */
  static forUser(
    username: string,
    rolpassword: string | null | undefined,
    secret: Buffer,
    iterations: number = defaultIterations,
  ): ScramServer {
    if (rolpassword === undefined || rolpassword === null) {
      return ScramServer.forUnknownUser(username, secret, iterations);
    }
    const verifier = parseVerifier(rolpassword);
    if (verifier === undefined) {
      return ScramServer.mock(
        username,
        secret,
        iterations,
        'stored secret is not a SCRAM verifier',
      );
    }
    return ScramServer.forVerifier(username, verifier);
  }

  private static mock(
    username: string,
    secret: Buffer,
    iterations: number,
    reason: string,
  ): ScramServer {
    // The keys only feed the proof computation, which must run (for timing) and then fail.
    const verifier: ScramVerifier = {
      iterations,
      salt: mockSalt(username, secret),
      storedKey: randomBytes(keyLength),
      serverKey: randomBytes(keyLength),
    };
    return new ScramServer(username, verifier, reason);
  }

  /**
   * Takes the SASLInitialResponse (mechanism and client-first-message) and returns the
   * server-first-message for AuthenticationSASLContinue. Throws ScramProtocolError for another
   * mechanism, channel binding, an authzid, a mandatory extension or a malformed message.
   */
  receiveClientFirst(mechanism: string, message: string): string {
    if (this.phase.name !== 'awaiting-first') {
      return this.fail('unexpected client-first-message');
    }
    if (mechanism !== scramMechanism) {
      return this.fail(
        `client selected an invalid SASL authentication mechanism "${sanitize(mechanism)}"`,
      );
    }
    const first = this.guard(() => parseClientFirst(message));
    const nonce = first.nonce + randomBytes(serverNonceBytes).toString('base64');
    const { salt, iterations } = this.verifier;
    const serverFirst = `r=${nonce},s=${salt.toString('base64')},i=${String(iterations)}`;
    this.phase = { name: 'awaiting-final', first, serverFirst, nonce };
    return serverFirst;
  }

  /**
   * Takes the client-final-message. Returns the server-final-message when the proof is right,
   * and a 28P01 error when it is wrong or the user unknown. Throws ScramProtocolError when the
   * message is malformed, repeats the wrong channel-binding flag or the wrong nonce.
   */
  receiveClientFinal(message: string): ScramOutcome {
    const phase = this.phase;
    if (phase.name !== 'awaiting-final') return this.fail('unexpected client-final-message');
    const final = this.guard(() => parseClientFinal(message));
    const expectedBinding = Buffer.from(`${phase.first.cbindFlag},,`).toString('base64');
    if (final.channelBinding !== expectedBinding) {
      return this.fail('unexpected SCRAM channel-binding attribute in client-final-message');
    }
    if (final.nonce !== phase.nonce)
      return this.fail('invalid SCRAM response: nonce does not match');
    this.phase = { name: 'done' };

    const authMessage = `${phase.first.bare},${phase.serverFirst},${final.withoutProof}`;
    // The proof is checked for a mock exchange too, and only then is `doomed` looked at, so that
    // an unknown user costs the same time as a wrong password (as in PostgreSQL).
    const clientKey = clientKeyOf(this.verifier.storedKey, authMessage, final.proof);
    if (clientKey === undefined || this.doomed !== undefined) {
      return {
        ok: false,
        error: authenticationFailed(this.username, this.doomed ?? 'wrong password'),
      };
    }
    const signature = serverSignature(this.verifier.serverKey, authMessage);
    return { ok: true, serverFinal: `v=${signature.toString('base64')}`, clientKey };
  }

  /** Runs a parser; a malformed message ends the exchange. */
  private guard<T>(parse: () => T): T {
    try {
      return parse();
    } catch (error) {
      this.phase = { name: 'done' };
      throw error;
    }
  }

  private fail(message: string): never {
    this.phase = { name: 'done' };
    throw new ScramProtocolError(message);
  }
}

// ---- messages (RFC 5802 §7) ----

export interface ClientFirst {
  /** gs2-cbind-flag: "n" (client does not bind) or "y" (client could, thinks we cannot). */
  cbindFlag: 'n' | 'y';
  /** client-first-message-bare, verbatim: the first part of AuthMessage. */
  bare: string;
  /** The "n=" value, which PostgreSQL and the proxy ignore (libpq sends "", pg sends "*"). */
  username: string;
  nonce: string;
}

export function parseClientFirst(message: string): ClientFirst {
  rejectNul(message);
  const flag = message[0];
  if (flag === 'p') {
    throw malformed(
      'the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data',
    );
  }
  if (flag !== 'n' && flag !== 'y') {
    throw malformed(`unexpected channel-binding flag ${describeChar(flag)}`);
  }
  if (message[1] !== ',') throw malformed(`comma expected, but found ${describeChar(message[1])}`);
  if (message[2] === 'a') {
    throw malformed('client uses authorization identity, but it is not supported');
  }
  if (message[2] !== ',') {
    throw malformed(`unexpected attribute ${describeChar(message[2])} in client-first-message`);
  }
  const bare = message.slice(3);
  if (bare.startsWith('m=')) throw malformed('client requires an unsupported SCRAM extension');
  const [user, nonce, ...extensions] = attributes(bare);
  const username = value(user, 'n');
  const clientNonce = value(nonce, 'r');
  if (clientNonce === '' || !isPrintable(clientNonce)) {
    throw malformed('the SCRAM nonce must be non-empty printable ASCII');
  }
  for (const extension of extensions) anyAttribute(extension);
  return { cbindFlag: flag, bare, username, nonce: clientNonce };
}

export interface ClientFinal {
  /** The "c=" value: base64 of the gs2 header when there is no channel binding. */
  channelBinding: string;
  nonce: string;
  /** client-final-message-without-proof, verbatim: the last part of AuthMessage. */
  withoutProof: string;
  /** ClientProof, 32 bytes. */
  proof: Buffer;
}

export function parseClientFinal(message: string): ClientFinal {
  rejectNul(message);
  const parts = attributes(message);
  const [binding, nonce] = parts;
  const channelBinding = value(binding, 'c');
  const finalNonce = value(nonce, 'r');
  const proofIndex = parts.findIndex((part) => part.startsWith('p='));
  if (proofIndex < 0) throw malformed('client-final-message has no proof');
  if (proofIndex !== parts.length - 1) {
    throw malformed('garbage found at the end of client-final-message');
  }
  for (const extension of parts.slice(2, proofIndex)) anyAttribute(extension);
  const proof = decodeBase64(value(parts[proofIndex], 'p'));
  if (proof?.length !== keyLength) throw malformed('malformed proof in client-final-message');
  return {
    channelBinding,
    nonce: finalNonce,
    withoutProof: parts.slice(0, proofIndex).join(','),
    proof,
  };
}

// ---- the two computations (RFC 5802 §3) ----

/**
 * ClientSignature = HMAC(StoredKey, AuthMessage); ClientKey = ClientProof XOR ClientSignature;
 * the proof holds when H(ClientKey) = StoredKey, compared in constant time.
 */
export function verifyClientProof(storedKey: Buffer, authMessage: string, proof: Buffer): boolean {
  return clientKeyOf(storedKey, authMessage, proof) !== undefined;
}

/** The ClientKey of a proof that holds (verifyClientProof), undefined when it does not. */
export function clientKeyOf(
  storedKey: Buffer,
  authMessage: string,
  proof: Buffer,
): Buffer | undefined {
  const signature = createHmac('sha256', storedKey).update(authMessage, 'utf8').digest();
  const clientKey = Buffer.alloc(keyLength);
  for (let i = 0; i < keyLength; i += 1) {
    clientKey[i] = (proof[i] ?? 0) ^ (signature[i] ?? 0);
  }
  const candidate = createHash('sha256').update(clientKey).digest();
  const holds = candidate.length === storedKey.length && timingSafeEqual(candidate, storedKey);
  return holds ? clientKey : undefined;
}

/** ServerSignature = HMAC(ServerKey, AuthMessage), the server's proof for the client. */
export function serverSignature(serverKey: Buffer, authMessage: string): Buffer {
  return createHmac('sha256', serverKey).update(authMessage, 'utf8').digest();
}

// ---- the frontend messages that carry SASL data (PostgreSQL docs, "Message Formats") ----

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The body (after type 'p' and length) of SASLInitialResponse: the mechanism as a C string, an
 * int32 length and the client-first-message. A length of -1 (no initial response, which no
 * PostgreSQL client sends for SCRAM) is refused, as is any length that does not match the body.
 */
export function decodeSASLInitialResponse(body: Buffer): { mechanism: string; data: string } {
  const end = body.indexOf(0);
  if (end < 0) throw new ScramProtocolError('invalid SASLInitialResponse: no mechanism name');
  const mechanism = text(body.subarray(0, end), 'SASLInitialResponse mechanism');
  if (body.length < end + 5) throw new ScramProtocolError('invalid SASLInitialResponse: too short');
  const length = body.readInt32BE(end + 1);
  if (length < 0) {
    throw new ScramProtocolError('invalid SASLInitialResponse: no client-first-message');
  }
  if (length !== body.length - end - 5) {
    throw new ScramProtocolError('invalid SASLInitialResponse: length does not match the message');
  }
  return { mechanism, data: text(body.subarray(end + 5), 'client-first-message') };
}

/** The body of SASLResponse: the client-final-message, all of it. */
export function decodeSASLResponse(body: Buffer): string {
  return text(body, 'client-final-message');
}

// ---- helpers ----

function text(bytes: Buffer, what: string): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new ScramProtocolError(`invalid UTF-8 in ${what}`);
  }
}

function malformed(detail: string): ScramProtocolError {
  return new ScramProtocolError(`malformed SCRAM message: ${detail}`);
}

function rejectNul(message: string): void {
  if (message.includes('\0')) throw malformed('the message contains a null byte');
}

/** Comma-separated attributes; an empty one (",," or a trailing comma) is malformed. */
function attributes(message: string): string[] {
  const parts = message.split(',');
  if (parts.some((part) => part === '')) throw malformed('empty attribute');
  return parts;
}

/** The value of `part`, which must be the attribute `name`. */
function value(part: string | undefined, name: string): string {
  if (part?.startsWith(`${name}=`) !== true) {
    throw malformed(`expected attribute "${name}" but found ${describeAttribute(part)}`);
  }
  return part.slice(2);
}

/** attr-val = ALPHA "=" value: an extension, which is accepted and ignored. */
function anyAttribute(part: string): void {
  if (!/^[A-Za-z]=/.test(part)) {
    throw malformed(`attribute expected, but found ${describeAttribute(part)}`);
  }
}

/** printable = %x21-2B / %x2D-7E */
function isPrintable(value: string): boolean {
  return /^[\x21-\x2b\x2d-\x7e]*$/.test(value);
}

function describeAttribute(part: string | undefined): string {
  return part === undefined ? 'end of message' : describeChar(part[0]);
}

/** A character for an error message: printable ASCII quoted, anything else as a code point. */
function describeChar(char: string | undefined): string {
  if (char === undefined || char === '') return 'end of message';
  const code = char.codePointAt(0) ?? 0;
  return code >= 0x21 && code <= 0x7e ? `"${char}"` : `U+${code.toString(16).padStart(4, '0')}`;
}

/** A client-chosen name for an error message: printable ASCII, at most 30 characters. */
function sanitize(name: string): string {
  return name.slice(0, 30).replace(/[^\x21-\x7e]/g, '?');
}
