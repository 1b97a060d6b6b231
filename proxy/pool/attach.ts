// The end of a pooled client's handshake and its attachment, the same in org mode and in app
// mode with pool_mode: authentication's last messages, the pooled session's ParameterStatus, a
// proxy-issued BackendKeyData and ReadyForQuery go in one write; then, by pool mode,
//   session     → a loan (pool/lend.ts): the backend is the client's until it leaves, then
//                 reset and back to the pool
//   transaction → a transaction link (pool/transaction-link.ts): the backend that ran the
//                 handshake's readying goes back to the pool with the client's context on it (its
//                 first transaction most likely gets it again at no cost), and every transaction
//                 borrows one
import { bookOf, type Owner } from './backend-book.js';
import type { Checkout } from './checkout.js';
import { loanAttachment } from './lend.js';
import { TransactionLink } from './transaction-link.js';
import * as send from '../protocol/encode.js';
import type { PoolMode } from '../config.js';
import type { PoolParts } from '../runtime.js';
import type { Attachment } from '../session/attachment.js';
import type { Session } from '../session/lifecycle.js';
import type { PoolKey, PooledSession } from '../upstream/login.js';

export interface PooledClient {
  parts: PoolParts;
  key: PoolKey;
  owner: Owner;
  /** The checked-out session, readied for the owner with the client's parameters. */
  pooled: PooledSession;
  checkout: Checkout;
  mode: PoolMode;
  /** AuthenticationSASLFinal + AuthenticationOk. */
  authOk: Buffer;
  /** The client's startup parameters. */
  startup: Map<string, string>;
}

export function attachPooled(session: Session, client: PooledClient): Attachment | undefined {
  const runtime = session.runtime;
  const { parts, key, owner, pooled, checkout } = client;
  const statuses = [...pooled.parameters].map(([name, value]) => send.parameterStatus(name, value));
  if (client.mode === 'transaction') {
    let link: TransactionLink | undefined;
    return session.attach(
      {
        processId: 0,
        secretKey: 0,
        forward: () => link?.cancel() ?? Promise.resolve(),
      },
      [client.authOk, ...statuses],
      send.readyForQueryIdle(),
      () => {
        const clientEarly = session.edge.reader.release();
        const reported = new Map(pooled.parameters);
        const switchTarget = checkout.switchTarget(pooled);
        parts.pool.checkin(pooled);
        checkout.handOver();
        link = new TransactionLink({
          pool: parts.pool,
          key,
          owner,
          client: session.edge.socket,
          clientEarly,
          startup: client.startup,
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
    [client.authOk, ...statuses],
    send.readyForQueryIdle(),
    () => {
      // From here on the client's session state is on it, until the release resets it.
      bookOf(pooled).used = true;
      const loan = loanAttachment({
        pool: parts.pool,
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
