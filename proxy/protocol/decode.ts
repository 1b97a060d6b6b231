// Every backend message the proxy reads itself (PostgreSQL docs §55.7): ErrorResponse and
// NoticeResponse, ParameterStatus, BackendKeyData, CommandComplete, Authentication requests.
// Pure decoders over a message body (the PacketReader bounded and framed it), plus one reader
// wrapper that turns a lost or garbled upstream into a ProxyError. Anything malformed is a
// ProxyError 08P01, never an exception of another kind.
import { proxyErrors } from '../errors.js';
import { AuthCode } from './codes.js';
import { PeerClosed, type Message, type PacketReader } from './reader.js';

/**
 * The fields of an ErrorResponse or NoticeResponse: those the proxy reads from upstream, and
 * those it writes itself (protocol/encode.ts errorResponse).
 */
export interface ErrorFields {
  severity?: string | undefined;
  code: string | undefined;
  message: string;
  detail?: string | undefined;
  hint?: string | undefined;
}

/** Upper bound of one message the proxy reads from upstream outside the pipe. */
export const maxUpstreamMessage = 1024 * 1024;

/** ErrorResponse/NoticeResponse body: (type byte, cstring)* then a zero byte. */
export function errorFields(body: Buffer): ErrorFields {
  const fields = new Map<string, string>();
  let at = 0;
  while (at < body.length && body[at] !== 0) {
    const type = String.fromCharCode(body[at] ?? 0);
    const end = body.indexOf(0, at + 1);
    if (end < 0) break;
    fields.set(type, body.toString('utf8', at + 1, end));
    at = end + 1;
  }
  return {
    severity: fields.get('V') ?? fields.get('S'),
    code: fields.get('C'),
    message: fields.get('M') ?? 'unknown error',
    detail: fields.get('D'),
    hint: fields.get('H'),
  };
}

/** ParameterStatus body: name and value, both cstrings. */
export function parameterStatus(body: Buffer): [string, string] {
  const end = body.indexOf(0);
  const name = body.toString('utf8', 0, end < 0 ? body.length : end);
  const valueEnd = body.indexOf(0, end + 1);
  return [name, body.toString('utf8', end + 1, valueEnd < 0 ? body.length : valueEnd)];
}

/** CommandComplete body: the tag as a cstring. */
export function commandTag(body: Buffer): string {
  const end = body.indexOf(0);
  return body.toString('utf8', 0, end < 0 ? body.length : end);
}

/** A backend's cancel key, as BackendKeyData carries it (protocol 3.0: two int32). */
export interface BackendKey {
  processId: number;
  secretKey: number;
}

/** BackendKeyData body: process id and secret key. */
export function backendKeyData(body: Buffer): BackendKey {
  if (body.length !== 8) throw proxyErrors.upstreamProtocol('BackendKeyData of unexpected length');
  return { processId: body.readInt32BE(0), secretKey: body.readInt32BE(4) };
}

/** An Authentication request: its method (AuthCode) and the bytes after it. */
export function authentication(body: Buffer): { method: number; data: Buffer } {
  if (body.length < 4) throw proxyErrors.upstreamProtocol('Authentication message too short');
  return { method: body.readInt32BE(0), data: body.subarray(4) };
}

/** How the refusal of an authentication method the proxy does not speak names it. */
export function authMethodName(method: number): string {
  switch (method) {
    case AuthCode.KerberosV5:
      return 'Kerberos V5';
    case AuthCode.GSS:
    case AuthCode.GSSContinue:
      return 'GSSAPI';
    case AuthCode.SSPI:
      return 'SSPI';
    default:
      return `method ${String(method)}`;
  }
}

/** AuthenticationSASL data: the mechanisms offered, each a cstring, then a zero byte. */
export function saslMechanisms(data: Buffer): string[] {
  return data.toString('utf8').split('\0').filter(Boolean);
}

/** The next upstream message; a closed or garbled upstream becomes a 08006/08P01 ProxyError. */
export async function upstreamMessage(reader: PacketReader, phase: string): Promise<Message> {
  try {
    return await reader.message(maxUpstreamMessage);
  } catch (error) {
    throw upstreamFailure(error, phase);
  }
}

/**
 * upstreamMessage() without waiting: the next message when it is buffered whole, else
 * undefined. Loops over a burst of answers (a reset, a readying) read them this way first.
 */
export function bufferedUpstreamMessage(reader: PacketReader, phase: string): Message | undefined {
  try {
    return reader.bufferedMessage(maxUpstreamMessage);
  } catch (error) {
    throw upstreamFailure(error, phase);
  }
}

function upstreamFailure(error: unknown, phase: string): Error {
  if (error instanceof PeerClosed) return proxyErrors.upstreamClosed(phase);
  return proxyErrors.upstreamProtocol((error as Error).message);
}
