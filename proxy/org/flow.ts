// Org mode, top to bottom: the database name names the org (`dbname=acme-analytics
// user=alice`), the proxy authenticates the user itself, and the client borrows a pooled backend.
//   startup → route (catalog: unknown → 3D000, suspended → 28000) → auth (proxy-side SCRAM,
//   org/proxy-auth.ts; one 28P01 for unknown user and wrong password, sent before any clean-up so
//   that both take the same time) → context (org/checkout.ts: a pooled session of the user's
//   connect_as role gets the org user's context and the client's parameters) → by pool_mode
//   (the org's, else the setting): session → a loan (pool/lend.ts; back to the pool, reset, when
//   the client leaves); transaction → a transaction link (pool/transaction-link.ts; a backend per
//   transaction)
// An address may have only max_unauthenticated_per_address connections between accept and the
// end of authentication (FATAL 53300 at accept beyond it).
import { proxyErrors } from '../errors.js';
import { bookOf } from '../pool/backend-book.js';
import { loanAttachment } from '../pool/lend.js';
import { TransactionLink } from '../pool/transaction-link.js';
import * as send from '../protocol/encode.js';
import type { Attachment } from '../session/attachment.js';
import type { Session } from '../session/lifecycle.js';
import type { PooledSession } from '../upstream/login.js';
import { Checkout } from './checkout.js';
import { authenticateOrgUser } from './proxy-auth.js';

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
  const key = user ? checkout.keyOf(found, user.connect_as) : undefined;
  // With pool_ready_early, while the client derives its SCRAM key (milliseconds of its CPU), an
  // idle pooled session is readied for it; failed authentication hands it back to be reset like
  // any released session. Off by default: a client that answers at once (an attacker can
  // precompute its proof) would find a known user's refusal later than an unknown user's.
  let early: Promise<PooledSession> | undefined;
  let authOk: Buffer;
  try {
    authOk = await authenticateOrgUser(
      session,
      org,
      { org: found, username, user },
      () => {
        if (runtime.config.pool_ready_early && key && !org.throttle.recentlyFailed(session.address))
          early = checkout.readyEarly(key, found, username);
      },
      checkout.signal(),
    );
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
  // The verifier matched, so the user and its key exist.
  if (!key || !user) throw new Error('authenticated a user the catalog does not have');
  session.identity.role = user.connect_as;
  const pooled = await checkout.take(key, found, username, parameters, early);
  if (!pooled) return undefined;
  // The end of the handshake in one write: authentication's last messages, the session's
  // ParameterStatus, a proxy-issued BackendKeyData and ReadyForQuery.
  const statuses = [...pooled.parameters].map(([name, value]) => send.parameterStatus(name, value));
  const poolMode = found.pool_mode ?? runtime.config.pool_mode;
  if (poolMode === 'transaction') {
    // The backend that ran the handshake's switch goes back to the pool with the client's
    // context on it; the client's first transaction most likely gets it again at no cost.
    let link: TransactionLink | undefined;
    return session.attach(
      {
        processId: 0,
        secretKey: 0,
        forward: () => link?.cancel() ?? Promise.resolve(),
      },
      [authOk, ...statuses],
      send.readyForQueryIdle(),
      () => {
        const clientEarly = session.edge.reader.release();
        const reported = new Map(pooled.parameters);
        const switchTarget = checkout.switchTarget(pooled);
        org.pool.checkin(pooled);
        checkout.handOver();
        link = new TransactionLink({
          pool: org.pool,
          key,
          owner: Checkout.ownerFor(found, username),
          client: session.edge.socket,
          clientEarly,
          startup: parameters,
          reported,
          switchTarget,
          control: runtime.control,
          onDefaultUpstream: checkout.onDefaultUpstream(pooled),
          maxPrepared: runtime.config.max_prepared_statements,
          idleInTransactionMs: runtime.config.idle_in_transaction_timeout * 1000,
          log: session.log,
          onTransaction: () => {
            runtime.metrics.poolTransaction();
          },
        });
        return link;
      },
    );
  }
  return session.attach(
    { processId: pooled.backendPid, secretKey: pooled.secretKey, upstream: pooled.key.target },
    [authOk, ...statuses],
    send.readyForQueryIdle(),
    () => {
      // From here on the client's session state is on it, until the release resets it.
      bookOf(pooled).used = true;
      const loan = loanAttachment({
        pool: org.pool,
        session: pooled,
        client: session.edge.socket,
        clientEarly: session.edge.reader.release(),
        control: runtime.control,
        onDefaultUpstream: checkout.onDefaultUpstream(pooled),
      });
      checkout.handOver();
      return loan;
    },
  );
}
