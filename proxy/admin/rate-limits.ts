// Per-client rate limits (@fastify/rate-limit), one counter per group and client address:
// `/api/v1/invites/*` together (rate_limit_invites, 10 a minute), `/api/v1/validate/*` and
// `/setup*` (rate_limit_public, 60 a minute each), and every authenticated route together
// (rate_limit_api, 600 a minute). The address is request.ip: the socket's, or X-Forwarded-For's
// when the connecting peer is one of admin_trust_proxy (Fastify's trustProxy, server.ts); an
// IPv6 client is keyed by its /64 and an IPv4-mapped address as the IPv4 one (the plugin's
// normalizeIP). A refused request gets 429 with `retry-after`, the route's usual headers and the
// usual error body. Groups are declared by routes (`config.limit`), never matched by path. The
// counters (RateLimitCounters) are shared by the admin and the public listener.
import { createRequire } from 'node:module';
import rateLimit, {
  type FastifyRateLimitStore,
  type FastifyRateLimitStoreCtor,
} from '@fastify/rate-limit';
import type { FastifyInstance, onRequestAsyncHookHandler } from 'fastify';
import type { ProxyConfig } from '../config.js';
import type { Metrics } from '../metrics.js';
import { apiErrors } from './api-error.js';

/** The groups a public route may declare; authenticated routes are all in `api`. */
export type LimitGroup = 'invites' | 'validate' | 'setup';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A public route's rate-limit group; none for health checks. */
    limit?: LimitGroup;
  }
}

export type Limiters = Record<LimitGroup | 'api', onRequestAsyncHookHandler>;

const minute = 60_000;

/** The plugin's own in-memory store: a fixed window per key, in a bounded LRU. */
const LocalStore = createRequire(import.meta.url)(
  '@fastify/rate-limit/store/LocalStore.js',
) as new (
  continueExceeding: boolean,
  exponentialBackoff: boolean,
  cache: number,
) => FastifyRateLimitStore;

/**
 * One counter store per group, shared by every listener built with it: a client reaching both
 * the admin and the public listener has one quota, not two.
 */
export class RateLimitCounters {
  readonly #stores = new Map<string, FastifyRateLimitStore>();

  of(group: string): FastifyRateLimitStore {
    let store = this.#stores.get(group);
    if (store === undefined) {
      // Bounded: the least recently seen addresses are forgotten first.
      store = new LocalStore(false, false, 10_000);
      this.#stores.set(group, store);
    }
    return store;
  }
}

/** The plugin's store: each limiter (a child, named by its groupId) gets its group's counters. */
function sharedStore(counters: RateLimitCounters): FastifyRateLimitStoreCtor {
  return class SharedStore implements FastifyRateLimitStore {
    incr(_key: string, callback: (error: Error | null) => void): void {
      callback(new Error('rate limit: a limiter without a group'));
    }

    child(options: object): FastifyRateLimitStore {
      const { groupId } = options as { groupId?: string };
      if (groupId === undefined) throw new Error('rate limit: a limiter without a group');
      return counters.of(groupId);
    }
  };
}

/** Registers the plugin (no global limit) and makes one limiter, one counter, per group. */
export async function limiters(
  app: FastifyInstance,
  config: Pick<ProxyConfig, 'rate_limit_invites' | 'rate_limit_public' | 'rate_limit_api'>,
  metrics: Pick<Metrics, 'httpRateLimited'>,
  counters: RateLimitCounters,
): Promise<Limiters> {
  await app.register(rateLimit, {
    global: false,
    timeWindow: minute,
    ipv6Subnet: 64,
    store: sharedStore(counters),
    onExceeded: (request) => {
      metrics.httpRateLimited(request.routeOptions.url ?? 'unmatched');
    },
    errorResponseBuilder: (_request, context) =>
      apiErrors.tooManyRequests(Math.max(1, Math.ceil(context.ttl / 1000))),
  });
  const limiter = (groupId: LimitGroup | 'api', max: number): onRequestAsyncHookHandler =>
    app.rateLimit({ max, timeWindow: minute, groupId });
  return {
    invites: limiter('invites', config.rate_limit_invites),
    validate: limiter('validate', config.rate_limit_public),
    setup: limiter('setup', config.rate_limit_public),
    api: limiter('api', config.rate_limit_api),
  };
}
