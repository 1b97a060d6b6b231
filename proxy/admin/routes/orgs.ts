// Orgs over HTTP, each route one SQL function of pgvpd_api (docs/control-plane.md §1), the token
// first: provision (201 + Location when created, 200 with created:false for the same spec
// again, 409 for another), read (org class), suspend and resume, remove from the catalog (204),
// the connect_as allow-list (204), and whether a database name is available (operator only).
import type { FastifyInstance } from 'fastify';
import { apiErrors } from '../api-error.js';
import type { AdminContext } from '../context.js';
import { name, orgParams, uuid, type OrgParams } from './schemas.js';

interface ProvisionBody {
  database_name?: string;
  display_name?: string;
  placement?: 'shared' | 'dedicated';
  server?: string;
  target_database?: string;
}

interface ProvisionRow {
  id: string;
  database_name: string;
  status: string;
  placement: string;
  created: boolean;
}

const provisionBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    database_name: name,
    display_name: { type: 'string', maxLength: 200 },
    placement: { type: 'string', enum: ['shared', 'dedicated'] },
    server: name,
    target_database: name,
  },
} as const;

const roleParams = {
  type: 'object',
  required: ['id', 'role'],
  properties: { id: uuid, role: name },
} as const;

export function orgRoutes(app: FastifyInstance, ctx: AdminContext): void {
  const { db } = ctx;

  app.post<{ Params: OrgParams; Body: ProvisionBody }>(
    '/api/v1/orgs/:id/provision',
    { config: { auth: 'operator' }, schema: { params: orgParams, body: provisionBody } },
    async (request, reply) => {
      const body = request.body;
      const [row] = await db.rows<ProvisionRow>(
        'select * from pgvpd.api_org_provision($1, $2, $3, $4, $5, $6, $7)',
        [
          request.apiToken,
          request.params.id,
          body.database_name ?? null,
          body.display_name ?? null,
          body.placement ?? null,
          body.server ?? null,
          body.target_database ?? null,
        ],
      );
      if (row === undefined) throw new Error('api_org_provision returned no row');
      if (row.created) reply.code(201).header('location', `/api/v1/orgs/${row.id}`);
      return row;
    },
  );

  app.get<{ Params: OrgParams }>(
    '/api/v1/orgs/:id',
    { config: { auth: 'org' }, schema: { params: orgParams } },
    async (request) => {
      const [row] = await db.rows('select * from pgvpd.api_org_get($1, $2)', [
        request.apiToken,
        request.params.id,
      ]);
      if (row === undefined) throw apiErrors.notFound(`no org ${request.params.id}`);
      return row;
    },
  );

  for (const [action, status] of [
    ['suspend', 'suspended'],
    ['resume', 'active'],
  ] as const) {
    app.post<{ Params: OrgParams }>(
      `/api/v1/orgs/:id/${action}`,
      { config: { auth: 'operator' }, schema: { params: orgParams } },
      async (request) => {
        const [row] = await db.rows<{ status: string; changed: boolean }>(
          'select * from pgvpd.api_org_set_status($1, $2, $3)',
          [request.apiToken, request.params.id, status],
        );
        return row;
      },
    );
  }

  app.delete<{ Params: OrgParams }>(
    '/api/v1/orgs/:id',
    { config: { auth: 'operator' }, schema: { params: orgParams } },
    async (request, reply) => {
      await db.rows('select pgvpd.api_org_remove($1, $2)', [request.apiToken, request.params.id]);
      return reply.code(204).send();
    },
  );

  for (const [method, fn] of [
    ['PUT', 'api_org_allow_role'],
    ['DELETE', 'api_org_disallow_role'],
  ] as const) {
    app.route<{ Params: OrgParams & { role: string } }>({
      method,
      url: '/api/v1/orgs/:id/connect-as/:role',
      config: { auth: 'operator' },
      schema: { params: roleParams },
      handler: async (request, reply) => {
        await db.rows(`select pgvpd.${fn}($1, $2, $3)`, [
          request.apiToken,
          request.params.id,
          request.params.role,
        ]);
        return reply.code(204).send();
      },
    });
  }

  app.get<{ Params: { name: string } }>(
    '/api/v1/database-names/:name',
    {
      config: { auth: 'operator' },
      schema: {
        params: {
          type: 'object',
          required: ['name'],
          properties: { name: { type: 'string', minLength: 1 } },
        },
      },
    },
    async (request) => {
      const [row] = await db.rows<{ available: boolean; reason: string | null }>(
        'select * from pgvpd.api_name_available($1, $2)',
        [request.apiToken, request.params.name],
      );
      if (row === undefined) throw new Error('api_name_available returned no row');
      return {
        name: request.params.name,
        available: row.available,
        ...(row.reason === null ? {} : { reason: row.reason }),
      };
    },
  );
}
