// An org's users over HTTP (org class: an operator token, or the org's own token): list, read,
// put (201 created, 200 updated; the body carries a SCRAM verifier, never a password), remove
// (204). Verifiers are never returned. An org token may choose connect_as only from the org's
// allow-list; SQL refuses any other role with 42501, naming it (403).
import type { FastifyInstance } from 'fastify';
import { apiErrors } from '../api-error.js';
import type { AdminContext } from '../context.js';
import {
  name,
  orgParams,
  orgUserParams,
  verifier,
  type OrgParams,
  type OrgUserParams,
} from './schemas.js';

interface UserRow {
  username: string;
  connect_as: string;
  created_at: Date;
}

interface PutUserBody {
  verifier: string;
  connect_as?: string;
}

const putUserBody = {
  type: 'object',
  required: ['verifier'],
  additionalProperties: false,
  properties: { verifier, connect_as: name },
} as const;

/** Only these columns leave the server, whatever the function returns. */
function userOf(row: UserRow): UserRow {
  return { username: row.username, connect_as: row.connect_as, created_at: row.created_at };
}

export function userRoutes(app: FastifyInstance, ctx: AdminContext): void {
  const { db } = ctx;

  app.get<{ Params: OrgParams }>(
    '/api/v1/orgs/:id/users',
    { config: { auth: 'org' }, schema: { params: orgParams } },
    async (request) => {
      const rows = await db.rows<UserRow>('select * from pgvpd.api_users($1, $2)', [
        request.apiToken,
        request.params.id,
      ]);
      return rows.map(userOf);
    },
  );

  app.get<{ Params: OrgUserParams }>(
    '/api/v1/orgs/:id/users/:username',
    { config: { auth: 'org' }, schema: { params: orgUserParams } },
    async (request) => {
      const [row] = await db.rows<UserRow>('select * from pgvpd.api_user_get($1, $2, $3)', [
        request.apiToken,
        request.params.id,
        request.params.username,
      ]);
      if (row === undefined) throw apiErrors.notFound(`no user ${request.params.username}`);
      return userOf(row);
    },
  );

  app.put<{ Params: OrgUserParams; Body: PutUserBody }>(
    '/api/v1/orgs/:id/users/:username',
    { config: { auth: 'org' }, schema: { params: orgUserParams, body: putUserBody } },
    async (request, reply) => {
      const [row] = await db.rows<{ result: string }>(
        'select pgvpd.api_user_put($1, $2, $3, $4, $5) as result',
        [
          request.apiToken,
          request.params.id,
          request.params.username,
          request.body.verifier,
          request.body.connect_as ?? null,
        ],
      );
      const created = row?.result === 'created';
      return reply.code(created ? 201 : 200).send({ username: request.params.username, created });
    },
  );

  app.delete<{ Params: OrgUserParams }>(
    '/api/v1/orgs/:id/users/:username',
    { config: { auth: 'org' }, schema: { params: orgUserParams } },
    async (request, reply) => {
      await db.rows('select pgvpd.api_user_remove($1, $2, $3)', [
        request.apiToken,
        request.params.id,
        request.params.username,
      ]);
      return reply.code(204).send();
    },
  );
}
