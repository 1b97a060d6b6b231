// An org's invites over HTTP (org class): create (201 {id, invite, setup_url, expires_at}; the
// invite is shown this once and travels in the link's fragment, which browsers never send),
// list (never an invite), revoke (204). `connect_as` is required when creating (400 without).
import type { FastifyInstance } from 'fastify';
import { setupUrl } from '../connect-info.js';
import type { AdminContext } from '../context.js';
import { name, orgParams, uuid, type OrgParams } from './schemas.js';

interface CreateInviteBody {
  username: string;
  connect_as: string;
  ttl_seconds?: number;
}

const createInviteBody = {
  type: 'object',
  // connect_as is required: SQL's format('%I', NULL) would otherwise fail with 22004, a 500.
  required: ['username', 'connect_as'],
  additionalProperties: false,
  properties: {
    username: name,
    connect_as: name,
    ttl_seconds: { type: 'integer', minimum: 1, maximum: 7 * 24 * 3600 },
  },
} as const;

interface InviteRow {
  id: string;
  username: string;
  connect_as: string;
  state: string;
  created_at: Date;
  expires_at: Date;
}

export function inviteRoutes(app: FastifyInstance, ctx: AdminContext): void {
  const { db } = ctx;

  app.post<{ Params: OrgParams; Body: CreateInviteBody }>(
    '/api/v1/orgs/:id/invites',
    { config: { auth: 'org' }, schema: { params: orgParams, body: createInviteBody } },
    async (request, reply) => {
      const { username, connect_as, ttl_seconds } = request.body;
      const [row] = await db.rows<{ id: string; invite: string; expires_at: Date }>(
        `select * from pgvpd.api_invite_create($1, $2, $3, $4, $5::integer * interval '1 second')`,
        [request.apiToken, request.params.id, username, connect_as, ttl_seconds ?? null],
      );
      if (row === undefined) throw new Error('api_invite_create returned no row');
      return reply.code(201).send({
        id: row.id,
        invite: row.invite,
        setup_url: setupUrl(ctx.publicUrl(), row.invite),
        expires_at: row.expires_at,
      });
    },
  );

  app.get<{ Params: OrgParams }>(
    '/api/v1/orgs/:id/invites',
    { config: { auth: 'org' }, schema: { params: orgParams } },
    async (request) => {
      const rows = await db.rows<InviteRow>('select * from pgvpd.api_invites($1, $2)', [
        request.apiToken,
        request.params.id,
      ]);
      return rows.map((row) => ({
        id: row.id,
        username: row.username,
        connect_as: row.connect_as,
        state: row.state,
        created_at: row.created_at,
        expires_at: row.expires_at,
      }));
    },
  );

  app.delete<{ Params: OrgParams & { invite_id: string } }>(
    '/api/v1/orgs/:id/invites/:invite_id',
    {
      config: { auth: 'org' },
      schema: {
        params: {
          type: 'object',
          required: ['id', 'invite_id'],
          properties: { id: uuid, invite_id: uuid },
        },
      },
    },
    async (request, reply) => {
      await db.rows('select pgvpd.api_invite_revoke($1, $2, $3)', [
        request.apiToken,
        request.params.id,
        request.params.invite_id,
      ]);
      return reply.code(204).send();
    },
  );
}
