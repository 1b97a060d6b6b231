// App mode with pool_mode, after the route: the tenant is in the username (`app_user.acme`) as
// ever, but the proxy authenticates the client itself and the client borrows a pooled backend
// of the role, as org mode's clients do.
//   lookup (pgvpd.app_role_verifier over the control connection: the role's own SCRAM verifier,
//     only for an application role the proxy may serve; the role name is the one parameter,
//     nothing else of the client's startup reaches it), started as AuthenticationSASL goes out
//   → auth (auth/proxy-auth.ts, once the client's first message and the lookup are in: SCRAM
//     against that verifier; a mock exchange for any other name, salted from the database's
//     shared mock secret, so unknown role and wrong password end in the same 28P01; an eligible
//     role without a SCRAM password gets a FATAL naming the fix; a database that does not exist
//     gets 3D000)
//   → keys (the ClientKey the proof revealed: the pool's next logins of the role use it, SCRAM
//     pass-through, app/role-keys.ts)
//   → checkout (pool/checkout.ts: a backend of (database, role) gets this username's tenant and
//     values through the one-statement switch, and the client's parameters)
//   → by pool_mode (pool/attach.ts): a loan, or a transaction link.
// Bypass users never come here: they keep a dedicated backend (app/flow.ts).
import { authenticateClient } from '../auth/proxy-auth.js';
import { ScramServer, orgMockSecret } from '../auth/scram-server.js';
import type { ScramVerifier } from '../auth/scram-verifier.js';
import { proxyErrors } from '../errors.js';
import { attachPooled } from '../pool/attach.js';
import { ownerOf } from '../pool/backend-book.js';
import { Checkout } from '../pool/checkout.js';
import { poolErrors } from '../pool/pool-errors.js';
import { refusedStartupParameter } from '../pool/switch.js';
import type { AppPool } from '../runtime.js';
import type { Attachment } from '../session/attachment.js';
import type { Session } from '../session/lifecycle.js';
import type { PoolKey } from '../upstream/login.js';
import type { AppRoute } from './route.js';

type TenantRoute = Extract<AppRoute, { kind: 'tenant' }>;

/**
 * `authenticating` is the unauthenticated-connection slot the flow took at accept: given back
 * once the client has authenticated.
 */
export async function appPooledFlow(
  session: Session,
  pooled: AppPool,
  route: TenantRoute,
  username: string,
  database: string,
  parameters: Map<string, string>,
  authenticating: () => void,
): Promise<Attachment | undefined> {
  const runtime = session.runtime;
  const checkout = new Checkout(session, runtime, pooled);
  session.enter('auth');
  const role = route.role;
  const key: PoolKey = { target: runtime.upstream, database, role };
  // The lookup runs while the client answers the mechanism list (AuthenticationSASL needs no
  // verifier): its round trip and the client's overlap. What it finds is used, or its failure
  // told, once the client's first message is in.
  const lookup = lookUp(session, pooled, key);
  const exchange = lookup.then((found) => found.scram);
  // Both are awaited only once the client's first message is in: a lookup that fails before
  // that (an unknown database, an MD5 role) must not be an unhandled rejection meanwhile.
  lookup.catch(() => undefined);
  exchange.catch(() => undefined);
  // The throttle's per-user count is per username (role, tenant and values): all of an
  // application's tenants share one role, whose failures must not hold back every tenant's login.
  const { answer, clientKey } = await authenticateClient(
    session,
    pooled.throttle,
    exchange,
    `app\0${database}\0${username}`,
    () => undefined,
    checkout.signal(),
  );
  // A proof that held comes only from a real verifier.
  const { verifier } = await lookup;
  if (!verifier) throw new Error('a mock exchange accepted a proof');
  pooled.keys.remember(key, { clientKey, verifier });
  authenticating();
  session.log.info({ event: 'auth', result: 'ok', role }, 'authenticated by the proxy');

  session.enter('context');
  const refused = refusedStartupParameter(parameters);
  if (refused !== undefined) throw poolErrors.startupRole(refused);
  const owner = ownerOf(null, route.tenant, route.user, route.values);
  const taken = await checkout.take(key, owner, parameters);
  if (!taken) return undefined;
  return attachPooled(session, {
    parts: pooled,
    key,
    owner,
    pooled: taken,
    checkout,
    mode: pooled.mode,
    authOk: answer,
    startup: parameters,
  });
}

/**
 * The role's verifier (pgvpd.app_role_verifier) and the exchange to run: a real one, or a mock
 * one for any name the lookup does not answer for, salted from the database's shared secret.
 */
async function lookUp(
  session: Session,
  pooled: AppPool,
  key: PoolKey,
): Promise<{ scram: ScramServer; verifier: ScramVerifier | undefined }> {
  const { database, role } = key;
  let found: Awaited<ReturnType<typeof session.runtime.control.appRoleVerifier>>;
  try {
    found = await session.runtime.control.appRoleVerifier(database, role);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    // As PostgreSQL and PgBouncer say it; the name is the client's own.
    if (code === '3D000') throw proxyErrors.unknownDatabase(database);
    throw proxyErrors.lookupFailed(
      typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined,
      (error as Error).message,
    );
  }
  // A role that may no longer be served keeps nothing here: its keys go, and with them its
  // pooled sessions (the pool's `outdated`).
  if (!found.verifier) pooled.keys.drop(key);
  if (found.problem) throw proxyErrors.appRoleNeedsScram(role, found.problem);
  // The mock salt of a name depends on the database's secret and the database: the same on
  // every proxy, different between databases (roles are per cluster, app roles per database).
  const mockSecret = orgMockSecret(found.mockSecret, `app\0${database}`);
  return {
    scram: found.verifier
      ? ScramServer.forVerifier(role, found.verifier)
      : ScramServer.forUnknownUser(role, mockSecret),
    verifier: found.verifier,
  };
}
