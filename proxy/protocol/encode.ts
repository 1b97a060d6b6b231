// Backend messages the proxy writes to its clients itself (PostgreSQL docs §55.7). Everything
// the upstream says is relayed as it came; these are the proxy's own words. Pure functions.
import { createRequire } from 'node:module';
import { AuthCode, BackendCode } from './codes.js';
import type { ErrorFields } from './decode.js';

/**
 * Frontend messages for the upstream leg (StartupMessage, Parse/Bind/Execute/Sync, Query,
 * password answers, Terminate), from pg-protocol's serializer: the one node-postgres uses.
 */
export const serialize = pgProtocol().serialize;

/**
 * pg-protocol through require(): it is CommonJS, and its named exports are not all visible to
 * an ESM import under every loader (tap's TypeScript loader sees none).
 */
function pgProtocol(): typeof import('pg-protocol') {
  return createRequire(import.meta.url)('pg-protocol') as typeof import('pg-protocol');
}

function message(code: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = code;
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

function int32(value: number): Buffer {
  const out = Buffer.allocUnsafe(4);
  out.writeInt32BE(value, 0);
  return out;
}

function cstring(value: string): Buffer {
  return Buffer.concat([Buffer.from(value, 'utf8'), Buffer.from([0])]);
}

/** ErrorResponse: S and V (severity), C (SQLSTATE), M, D, H fields. */
export function errorResponse(
  fields: ErrorFields & { severity: 'FATAL' | 'ERROR'; code: string },
): Buffer {
  const parts: Buffer[] = [];
  const field = (tag: string, value: string | undefined): void => {
    if (value !== undefined) parts.push(Buffer.from(tag, 'ascii'), cstring(value));
  };
  field('S', fields.severity);
  field('V', fields.severity);
  field('C', fields.code);
  field('M', fields.message);
  field('D', fields.detail);
  field('H', fields.hint);
  parts.push(Buffer.from([0]));
  return message(BackendCode.ErrorResponse, Buffer.concat(parts));
}

export function authenticationCleartextPassword(): Buffer {
  return message(BackendCode.Authentication, int32(AuthCode.CleartextPassword));
}

export function authenticationSASL(mechanisms: string[]): Buffer {
  return message(
    BackendCode.Authentication,
    Buffer.concat([int32(AuthCode.SASL), ...mechanisms.map(cstring), Buffer.from([0])]),
  );
}

export function authenticationSASLContinue(data: string): Buffer {
  return message(
    BackendCode.Authentication,
    Buffer.concat([int32(AuthCode.SASLContinue), Buffer.from(data, 'utf8')]),
  );
}

export function authenticationSASLFinal(data: string): Buffer {
  return message(
    BackendCode.Authentication,
    Buffer.concat([int32(AuthCode.SASLFinal), Buffer.from(data, 'utf8')]),
  );
}

export function parameterStatus(name: string, value: string): Buffer {
  return message(BackendCode.ParameterStatus, Buffer.concat([cstring(name), cstring(value)]));
}

/** ReadyForQuery with transaction status 'I' (idle). */
export function readyForQueryIdle(): Buffer {
  return message(BackendCode.ReadyForQuery, Buffer.from('I', 'ascii'));
}

export function authenticationOk(): Buffer {
  return message(BackendCode.Authentication, int32(AuthCode.Ok));
}

export function backendKeyData(processId: number, secretKey: number): Buffer {
  return message(BackendCode.BackendKeyData, Buffer.concat([int32(processId), int32(secretKey)]));
}

/** NegotiateProtocolVersion: the newest minor version we speak and the options we ignored. */
export function negotiateProtocolVersion(newestMinor: number, unsupported: string[]): Buffer {
  return message(
    BackendCode.NegotiateProtocolVersion,
    Buffer.concat([int32(newestMinor), int32(unsupported.length), ...unsupported.map(cstring)]),
  );
}

/** The single byte answering SSLRequest or GSSENCRequest. */
export const acceptTls = Buffer.from('S', 'ascii');
export const refuseEncryption = Buffer.from('N', 'ascii');
