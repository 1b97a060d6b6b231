// Org mode, top to bottom: the database name names the org (`dbname=acme-analytics
// user=alice`), the proxy authenticates the user itself, and the client borrows a pooled backend.
//   startup → route (catalog: unknown → 3D000, suspended → 28000) → auth (proxy-side SCRAM,
//   auth/proxy-auth.ts; one 28P01 for unknown user and wrong password, sent before any clean-up
//   so that both take the same time) → context (pool/checkout.ts: a pooled session of the user's
//   connect_as role gets the org user's context and the client's parameters) → by pool_mode
//   (the org's, else the setting, else session; pool/attach.ts): session → a loan (pool/lend.ts;
//   back to the pool, reset, when the client leaves); transaction → a transaction link
//   (pool/transaction-link.ts; a backend per transaction)
// An address may have only max_unauthenticated_per_address connections between accept and the
// end of authentication (FATAL 53300 at accept beyond it).
import { authenticateClient } from '../auth/proxy-auth.js';
import { ScramServer, orgMockSecret } from '../auth/scram-server.js';
import { proxyErrors } from '../errors.js';
import { attachPooled } from '../pool/attach.js';
import { ownerOf, type Owner } from '../pool/backend-book.js';
import { Checkout } from '../pool/checkout.js';
import { poolErrors } from '../pool/pool-errors.js';
import { refusedStartupParameter } from '../pool/switch.js';
import type { OrgParts, Runtime } from '../runtime.js';
import type { Attachment } from '../session/attachment.js';
import type { Session } from '../session/lifecycle.js';
import type { UpstreamTarget } from '../upstream/connect.js';
import type { PoolKey, PooledSession } from '../upstream/login.js';
import type { CatalogOrg } from './catalog.js';

/** Whose context a client of `org` logged in as `username` gets: the org, the user. */
export function orgOwner(org: CatalogOrg, username: string): Owner {
  return ownerOf(org.id, null, username);
}

/** The pool key of an org's connect_as role: the org's server (or the default) and database. */
function orgKey(runtime: Runtime, org: OrgParts, found: CatalogOrg, connectAs: string): PoolKey {
  return {
    target: targetOf(runtime, org, found),
    database: found.target_database,
    role: connectAs,
  };
}

function targetOf(runtime: Runtime, org: OrgParts, found: CatalogOrg): UpstreamTarget {
  const fallback = runtime.upstream;
  const server = org.catalog.server(found.server);
  if (!server || server.host === null || server.port === null) return fallback;
  return {
    host: server.host,
    port: server.port,
    tls: server.tls !== 'disable',
    tlsVerify: server.tls === 'verify-full',
    tlsCa: fallback.tlsCa,
  };
}

export async function orgFlow(session: Session): Promise<Attachment | undefined> {
  const runtime = session.runtime;
  const org = runtime.org;
  if (!org) throw new Error('org flow without org mode parts');
  // Counted from accept until authentication ends; beyond the cap refused at once.
  const authenticating = org.unauthenticated.enter(session.address);
  if (!authenticating)
    throw proxyErrors.tooManyUnauthenticated(session.address, org.unauthenticated.max);
  session.hold(authenticating);
  const checkout = new Checkout(session, runtime, org);
  const parameters = await session.edge.startup();
  if (parameters === undefined || session.isClosed()) return undefined;

  session.enter('route');
  const username = parameters.get('user');
  if (username === undefined || username === '') throw proxyErrors.noUser();
  const database = parameters.get('database') || username;
  const found = org.catalog.org(database);
  if (!found) throw proxyErrors.unknownDatabase(database);
  if (found.status !== 'active') throw proxyErrors.orgSuspended(database);
  Object.assign(session.identity, { tenant: found.id, user: username, database });
  session.log.info(
    { event: 'connect', org: found.id, user: username, database },
    'client connected',
  );

  session.enter('auth');
  const user = org.catalog.user(found.id, username);
  const key = user ? orgKey(runtime, org, found, user.connect_as) : undefined;
  const owner = orgOwner(found, username);
  // With pool_ready_early, while the client derives its SCRAM key (milliseconds of its CPU), an
  // idle pooled session is readied for it; failed authentication hands it back to be reset like
  // any released session. Off by default: a client that answers at once (an attacker can
  // precompute its proof) would find a known user's refusal later than an unknown user's.
  let early: Promise<PooledSession> | undefined;
  let authOk: Buffer;
  try {
    ({ answer: authOk } = await authenticateClient(
      session,
      org.throttle,
      ScramServer.forUser(username, user?.verifier, orgMockSecret(org.mockSecret(), found.id)),
      `${found.id}\0${username}`,
      () => {
        if (runtime.config.pool_ready_early && key && !org.throttle.recentlyFailed(session.address))
          early = checkout.readyEarly(key, owner);
      },
      checkout.signal(),
    ));
  } catch (error) {
    // The refusal goes out before any clean-up, so that a wrong password (whose session
    // readied early is handed back here) is answered as fast as an unknown user.
    session.answer(error);
    if (early) await checkout.giveBack(early);
    throw error;
  }
  authenticating();
  session.log.info({ event: 'auth', result: 'ok', org: found.id, user: username }, 'authenticated');

  session.enter('context');
  const refused = refusedStartupParameter(parameters);
  if (refused !== undefined) throw poolErrors.startupRole(refused);
  // The verifier matched, so the user and its key exist.
  if (!key || !user) throw new Error('authenticated a user the catalog does not have');
  session.identity.role = user.connect_as;
  const pooled = await checkout.take(key, owner, parameters, early);
  if (!pooled) return undefined;
  return attachPooled(session, {
    parts: org,
    key,
    owner,
    pooled,
    checkout,
    mode: found.pool_mode ?? runtime.config.pool_mode ?? 'session',
    authOk,
    startup: parameters,
  });
}
