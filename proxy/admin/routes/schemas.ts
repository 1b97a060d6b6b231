// JSON schemas shared by the routes: path parameters and the pieces of request bodies. Field
// names are fixed by docs/control-plane.md §2.

export const uuid = { type: 'string', format: 'uuid' } as const;
/** PostgreSQL names are at most 63 bytes; longer values are refused here rather than truncated. */
export const name = { type: 'string', minLength: 1, maxLength: 63 } as const;
/** A SCRAM-SHA-256 verifier (about 130 characters); checked in SQL. */
export const verifier = { type: 'string', minLength: 1, maxLength: 1024 } as const;

export const orgParams = {
  type: 'object',
  required: ['id'],
  properties: { id: uuid },
} as const;

export const orgUserParams = {
  type: 'object',
  required: ['id', 'username'],
  properties: { id: uuid, username: name },
} as const;

export interface OrgParams {
  id: string;
}

export interface OrgUserParams {
  id: string;
  username: string;
}
