// The public routes of the API (no token; also served by the public listener): whether an org
// exists and is active (validate: 200 {database_name, active}, 404 unknown, 400 invalid name),
// what an invite is for (info) and redeeming it with a SCRAM verifier (redeem). Invites travel
// only in JSON POST bodies, never in a URL; every invite that cannot be used (unknown,
// malformed, one holding a NUL, expired, revoked, consumed, org suspended) gets the same 410 body
// from both. A verifier SQL refuses (also fewer than 4096 iterations) is 400 and leaves the
// invite open.
import type { FastifyInstance } from 'fastify';
import { apiErrors } from '../api-error.js';
import { connectInfo } from '../connect-info.js';
import type { AdminContext } from '../context.js';
import { apiErrorOf } from '../sql-errors.js';
import { verifier } from './schemas.js';

/** PostgreSQL's default scram_iterations, and the least redeem accepts. */
const scramIterations = 4096;

interface InfoRow {
  database_name: string;
  display_name: string | null;
  username: string;
  expires_at: Date;
}

const inviteBody = {
  type: 'object',
  required: ['invite'],
  additionalProperties: false,
  // No pattern: a malformed invite must get the same 410 as an unknown one, from SQL.
  properties: { invite: { type: 'string' } },
} as const;

const redeemBody = {
  type: 'object',
  required: ['invite', 'verifier'],
  additionalProperties: false,
  properties: { invite: { type: 'string' }, verifier },
} as const;

export function publicRoutes(app: FastifyInstance, ctx: AdminContext): void {
  const { db, runtime } = ctx;
  const { metrics } = runtime;

  app.get<{ Params: { database_name: string } }>(
    '/api/v1/validate/:database_name',
    {
      config: { auth: 'public', limit: 'validate' },
      schema: {
        params: {
          type: 'object',
          required: ['database_name'],
          properties: { database_name: { type: 'string', minLength: 1 } },
        },
      },
    },
    async (request) => {
      const [row] = await db.rows<{ database_name: string; active: boolean }>(
        'select * from pgvpd.org_validate($1)',
        [request.params.database_name],
      );
      if (row === undefined) throw apiErrors.notFound('no such organization');
      return { database_name: row.database_name, active: row.active };
    },
  );

  const info = async (invite: string): Promise<InfoRow> => {
    // A NUL cannot be a text parameter (PostgreSQL raises 22021 before the function runs): such
    // an invite is as dead as any other, with the same 410.
    if (invite.includes('\u0000')) throw apiErrors.gone();
    const [row] = await db.rows<InfoRow>('select * from pgvpd.invite_info($1)', [invite]);
    if (row === undefined) throw apiErrors.gone();
    return row;
  };

  app.post<{ Body: { invite: string } }>(
    '/api/v1/invites/info',
    { config: { auth: 'public', limit: 'invites' }, schema: { body: inviteBody } },
    async (request) => {
      const row = await info(request.body.invite);
      return {
        org: { database_name: row.database_name, display_name: row.display_name },
        username: row.username,
        expires_at: row.expires_at,
        scram_iterations: scramIterations,
      };
    },
  );

  app.post<{ Body: { invite: string; verifier: string } }>(
    '/api/v1/invites/redeem',
    { config: { auth: 'public', limit: 'invites' }, schema: { body: redeemBody } },
    async (request) => {
      const { invite, verifier: submitted } = request.body;
      try {
        // The org's display name, and a dead invite answered before anything is written.
        const org = await info(invite);
        const [row] = await db.rows<{ database_name: string; username: string }>(
          'select * from pgvpd.invite_redeem($1, $2)',
          [invite, submitted],
        );
        if (row === undefined) throw apiErrors.gone();
        metrics.inviteRedeem('ok');
        return {
          org: { database_name: row.database_name, display_name: org.display_name },
          username: row.username,
          ...connectInfo(ctx.connect, row.database_name, row.username),
        };
      } catch (error) {
        const status = apiErrorOf(error)?.status;
        if (status === 410) metrics.inviteRedeem('gone');
        if (status === 400) metrics.inviteRedeem('invalid_verifier');
        throw error;
      }
    },
  );
}
