// Switch grants: what the proxy writes, as bind parameters, into `pgvpd.switch_context` on a
// pooled backend so that the backend takes a new owner's context in one statement, with no
// control round trip. A grant is the claims (which backend, which sequence number, whose
// context) and their HMAC-SHA256 under the key of this proxy's registration in the database
// (upstream/instance-keys.ts).
//
// Guarantees: the claims are JSON with the fields in the order the database expects
// (pid, start, seq, org, tenant, user, vals) and ASCII only (every character above U+007F is
// \u-escaped), so the bytes the MAC covers are the same whatever the session's client_encoding;
// every grant minted for a session carries a higher seq than the one before it, so the database
// takes none twice and none out of order; a session whose backend start is not known gets no
// grant at all (an Error, never a grant that names another backend).
import { createHmac } from 'node:crypto';
import type { PooledSession } from '../upstream/login.js';

/** This proxy's registration in one database: its id there and the 32-byte key of its grants. */
export interface InstanceKey {
  /** pgvpd_private.proxy_instances.id, as decimal text (a bigint). */
  readonly instance: string;
  readonly secret: Buffer;
}

/** Whose context a grant carries. Org mode: org set, tenant null; app mode: org null. */
export interface GrantOwner {
  org: string | null;
  tenant: string | null;
  user: string | null;
  values: Record<string, string>;
}

/** A minted grant: switch_context's three parameters. */
export interface Grant {
  /** The instance whose key signed it (a refusal naming it means: forget the key). */
  readonly instance: string;
  /** The claims, JSON text; the MAC covers exactly these bytes. */
  readonly claims: string;
  /** Lowercase hex HMAC-SHA256(key, claims). */
  readonly mac: string;
}

/** JSON text with every non-ASCII UTF-16 unit written as \uXXXX (valid JSON, same value). */
function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(
    /[\u0080-\uffff]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/**
 * The next grant for `session`: takes the next sequence number (session.switchSeq is incremented
 * first) and signs the claims with `key`. Throws when the session's backend start is unknown
 * (a login that did not read pgvpd.backend_start()).
 */
export function mintGrant(
  key: InstanceKey,
  session: Pick<PooledSession, 'backendPid' | 'backendStart' | 'switchSeq'>,
  owner: GrantOwner,
): Grant {
  if (!/^[0-9]+$/.test(session.backendStart))
    throw new Error(
      `pooled session (backend ${String(session.backendPid)}) has no backend start: no switch grant can name it`,
    );
  session.switchSeq += 1;
  const claims = asciiJson({
    pid: session.backendPid,
    start: session.backendStart,
    seq: session.switchSeq,
    org: owner.org,
    tenant: owner.tenant,
    user: owner.user,
    vals: owner.values,
  });
  const mac = createHmac('sha256', key.secret).update(claims, 'utf8').digest('hex');
  return { instance: key.instance, claims, mac };
}

/** The call that takes a grant, its parameters numbered from `first` (see grantParams). */
export function switchCall(first: number): string {
  return `pgvpd.switch_context($${String(first)}::bigint, $${String(first + 1)}, $${String(first + 2)})`;
}

/** switch_context's parameters, in switchCall's order: instance, claims, mac. */
export function grantParams(grant: Grant): string[] {
  return [grant.instance, grant.claims, grant.mac];
}
