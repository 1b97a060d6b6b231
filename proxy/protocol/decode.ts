// The few backend messages the pool reads itself (PostgreSQL docs §55.7), beyond those of the
// handshake in ../protocol/codes.ts: enough to run a statement and to check a reset. Pure helpers
// plus one reader wrapper that turns a lost or garbled upstream into a ProxyError.
import { proxyErrors } from '../errors.js';
import { PeerClosed, type Message, type PacketReader } from './reader.js';

/** Message type bytes sent by the server after the handshake. */
export const enum ResultCode {
  /** '1' */
  ParseComplete = 0x31,
  /** '2' */
  BindComplete = 0x32,
  /** 'A' */
  NotificationResponse = 0x41,
  /** 'C' */
  CommandComplete = 0x43,
  /** 'D' */
  DataRow = 0x44,
  /** 'I' */
  EmptyQueryResponse = 0x49,
  /** 'n' */
  NoData = 0x6e,
  /** 's' */
  PortalSuspended = 0x73,
  /** 't' */
  ParameterDescription = 0x74,
  /** 'T' */
  RowDescription = 0x54,
}

/** The fields of an ErrorResponse or NoticeResponse the pool passes on. */
export interface ErrorFields {
  code: string | undefined;
  message: string;
  hint: string | undefined;
}

/** Upper bound of one message the pool reads (a statement's rows are small, but not tiny). */
export const maxPoolMessage = 1024 * 1024;

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
    code: fields.get('C'),
    message: fields.get('M') ?? 'unknown error',
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

/** The next upstream message; a closed or garbled upstream becomes a 08006/08P01 ProxyError. */
export async function upstreamMessage(reader: PacketReader, phase: string): Promise<Message> {
  try {
    return await reader.message(maxPoolMessage);
  } catch (error) {
    if (error instanceof PeerClosed) throw proxyErrors.upstreamClosed(phase);
    throw proxyErrors.upstreamProtocol((error as Error).message);
  }
}
