// Named statements in transaction mode: a client's statement names are its own, but the backend
// that serves its next transaction may be another one, shared with other clients. So the proxy
// renames them: the name on the backend is derived from the owner (org, user, values), the query
// text and the parameter types, `pgvpd_<24 hex of SHA-256>`. Equal statements of one owner share
// one name on a backend (clients of one org user reuse each other's). A backend's statements are
// deallocated when its owner changes (the reset is DISCARD ALL), so the owner in the name only
// keeps names apart; no statement is ever used by two owners.
// Also the frontend messages that carry a statement name (Parse, Bind, Describe, Close): read
// the name, write the message again with another.
import { createHash } from 'node:crypto';

/** A name no statement ever gets: Close of it answers CloseComplete and closes nothing. */
export const noStatement = 'pgvpd_none';

/** The backend's name for a client's Parse body after its name (`rest`), for `owner`. */
export function serverName(owner: string, rest: Buffer): string {
  return `pgvpd_${createHash('sha256').update(owner).update('\0').update(rest).digest('hex').slice(0, 24)}`;
}

/** Index of the NUL ending the C string at `from`, or -1. */
function cstringEnd(body: Buffer, from: number): number {
  return body.indexOf(0, from);
}

/** A message from its type and body. */
export function frame(code: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = code;
  out.writeInt32BE(body.length + 4, 1);
  body.copy(out, 5);
  return out;
}

export interface ParseParts {
  name: string;
  /** Query text, NUL, parameter count and types: what makes two statements the same. */
  rest: Buffer;
}

/** Parse: name, then the rest. Undefined if malformed. */
export function readParse(body: Buffer): ParseParts | undefined {
  const end = cstringEnd(body, 0);
  if (end < 0) return undefined;
  return { name: body.toString('utf8', 0, end), rest: body.subarray(end + 1) };
}

export function writeParse(name: string, rest: Buffer): Buffer {
  return frame(0x50, Buffer.concat([Buffer.from(name + '\0', 'utf8'), rest]));
}

export interface BindParts {
  portal: Buffer;
  statement: string;
  /** Everything after the statement name. */
  rest: Buffer;
}

/** Bind: portal, statement, then the rest. Undefined if malformed. */
export function readBind(body: Buffer): BindParts | undefined {
  const portalEnd = cstringEnd(body, 0);
  if (portalEnd < 0) return undefined;
  const statementEnd = cstringEnd(body, portalEnd + 1);
  if (statementEnd < 0) return undefined;
  return {
    portal: body.subarray(0, portalEnd + 1),
    statement: body.toString('utf8', portalEnd + 1, statementEnd),
    rest: body.subarray(statementEnd + 1),
  };
}

export function writeBind(parts: BindParts, statement: string): Buffer {
  return frame(
    0x42,
    Buffer.concat([parts.portal, Buffer.from(statement + '\0', 'utf8'), parts.rest]),
  );
}

/** Describe or Close: 'S' (statement) or 'P' (portal), then a name. Undefined if malformed. */
export function readTarget(body: Buffer): { kind: number; name: string } | undefined {
  if (body.length < 2) return undefined;
  const end = cstringEnd(body, 1);
  if (end < 0) return undefined;
  return { kind: body[0] ?? 0, name: body.toString('utf8', 1, end) };
}

export function writeTarget(code: number, kind: number, name: string): Buffer {
  return frame(code, Buffer.concat([Buffer.from([kind]), Buffer.from(name + '\0', 'utf8')]));
}
