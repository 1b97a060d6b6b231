// GET /api/v1/status (operator): what the runtime record says now: version, mode, uptime,
// whether the proxy is draining, sessions by phase, the pool mode, pool totals and per key (org
// mode, and app mode with pool_mode; null for app mode without), the catalog (org mode, with its
// orgs by the pool mode they are served in), and this proxy's instance registrations (the keys
// its switch grants are signed with; never a secret). Names of orgs, users, roles and databases
// appear only as pool keys and registrations' databases, for operators.
import type { FastifyInstance } from 'fastify';
import { packageVersion } from '../../package-root.js';
import type { AdminContext } from '../context.js';

export function statusRoutes(app: FastifyInstance, ctx: AdminContext): void {
  const { runtime, readiness } = ctx;
  app.get('/api/v1/status', { config: { auth: 'operator' } }, () => {
    const byPhase: Record<string, number> = {};
    const sessions = runtime.describeSessions();
    for (const session of sessions) byPhase[session.phase] = (byPhase[session.phase] ?? 0) + 1;
    const org = runtime.org;
    const pooling = runtime.pooling;
    const poolMode = runtime.config.pool_mode ?? 'session';
    const catalog = org?.catalog.status();
    return {
      version: packageVersion,
      mode: runtime.config.mode,
      uptime_s: Math.floor((Date.now() - runtime.startedAt) / 1000),
      draining: readiness.isDraining,
      sessions: { total: sessions.length, by_phase: byPhase },
      // App mode without pool_mode: null (every client has a backend of its own).
      pool_mode: pooling ? (runtime.app?.pooled?.mode ?? poolMode) : null,
      pool: pooling?.pool.stats() ?? null,
      catalog:
        org === undefined || catalog === undefined
          ? null
          : {
              connected: catalog.connected,
              loaded_at:
                catalog.loadedAt === undefined ? null : new Date(catalog.loadedAt).toISOString(),
              orgs: catalog.orgs,
              users: catalog.users,
              pool_modes: org.catalog.poolModes(poolMode),
            },
      instances:
        pooling?.instanceKeys.describe().map((entry) => ({
          server: entry.server,
          database: entry.database,
          instance: entry.instance,
          registered_at: entry.registeredAt,
          lease_until: entry.leaseUntil,
        })) ?? null,
    };
  });
}
