// The first packet of a connection (PostgreSQL docs §55.2.1, §55.7: StartupMessage, SSLRequest,
// GSSENCRequest, CancelRequest), decoded from a body whose length the reader already bounded.
import { RequestCode, protocol30 } from './codes.js';
import { ProtocolViolation } from './reader.js';

export type StartupPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; processId: number; secretKey: Buffer }
  | {
      kind: 'startup';
      /** (major << 16) | minor as the client sent it. */
      version: number;
      /** Parameters other than `_pq_.` protocol options. */
      parameters: Map<string, string>;
      /** `_pq_.` options the client asked for; the proxy supports none. */
      protocolOptions: string[];
    };

export function decodeStartup(body: Buffer): StartupPacket {
  const code = body.readInt32BE(0);
  switch (code) {
    case RequestCode.SSLRequest:
      expectLength(body, 4, 'SSLRequest');
      return { kind: 'ssl' };
    case RequestCode.GSSENCRequest:
      expectLength(body, 4, 'GSSENCRequest');
      return { kind: 'gssenc' };
    case RequestCode.CancelRequest:
      // Protocol 3.2 allows secret keys of up to 256 bytes; 3.0 sends 4.
      if (body.length < 12 || body.length > 8 + 256) {
        throw new ProtocolViolation('invalid length of CancelRequest');
      }
      return { kind: 'cancel', processId: body.readInt32BE(4), secretKey: body.subarray(8) };
  }
  if (code >>> 16 !== protocol30 >>> 16) {
    throw new ProtocolViolation(
      `unsupported frontend protocol ${String(code >>> 16)}.${String(code & 0xffff)}: server supports 3.0`,
    );
  }
  const parameters = new Map<string, string>();
  const protocolOptions: string[] = [];
  let offset = 4;
  for (;;) {
    const name = cstring(body, offset);
    offset = name.next;
    if (name.value === '') break;
    const value = cstring(body, offset);
    offset = value.next;
    if (name.value.startsWith('_pq_.')) protocolOptions.push(name.value);
    else parameters.set(name.value, value.value);
  }
  if (offset !== body.length)
    throw new ProtocolViolation('invalid startup packet layout: expected terminator as last byte');
  return { kind: 'startup', version: code, parameters, protocolOptions };
}

function expectLength(body: Buffer, length: number, what: string): void {
  if (body.length !== length) throw new ProtocolViolation(`invalid length of ${what}`);
}

function cstring(body: Buffer, offset: number): { value: string; next: number } {
  const end = body.indexOf(0, offset);
  if (end < 0)
    throw new ProtocolViolation('invalid startup packet layout: expected terminator as last byte');
  return { value: body.toString('utf8', offset, end), next: end + 1 };
}
