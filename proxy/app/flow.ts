// App mode, top to bottom: the tenant is in the username (`app_user.acme`), PostgreSQL
// authenticates the client (the proxy relays), and the client gets a backend of its own.
//   startup → route (username → role, tenant, values) → auth (relayed upstream)
//   → context (issued over the control connection, set on the backend before the client's
//     first ReadyForQuery) → pipe (session/pipe.ts)
// Nothing the client sends after authentication reaches the backend before the signed context
// is set; a bypass user (superuser_bypass, only from bypass_networks) gets no context.
// With pool_mode, a tenant client goes on in app/pooled-flow.ts after the route (the proxy
// authenticates it and it borrows a pooled backend); a bypass user still gets its own backend.
import { serialize } from '../protocol/encode.js';
import { proxyErrors } from '../errors.js';
import { BackendCode } from '../protocol/codes.js';
import {
  errorFields,
  maxUpstreamMessage,
  upstreamMessage,
  type ErrorFields,
} from '../protocol/decode.js';
import { PeerClosed, type Message } from '../protocol/reader.js';
import type { Attachment } from '../session/attachment.js';
import type { Session } from '../session/lifecycle.js';
import { pipe } from '../session/pipe.js';
import { connectUpstream, type Upstream } from '../upstream/connect.js';
import { issueContext, type IssuedContext } from '../upstream/control.js';
import { untilReady } from '../upstream/ready.js';
import { appPooledFlow } from './pooled-flow.js';
import { relayAuthentication, relayedFailure } from './relay-auth.js';

// How the token goes in, by the database's context path (returned with the token). On the SQL
// path the accessors check the session's pgvpd.context setting against the record for this
// backend on every statement, and a client may write that setting itself: the proxy writes it
// with the built-in set_config, so a fresh backend's first statement reads no pgvpd table and
// calls no pgvpd function (set_context there cost ~1.3 ms more than a first `select 1`: the
// function, session_context and its index read into cold caches). A token that is not the
// record (none can be: the database wrote it for this backend's pid a moment ago) would match no
// row, as any wrong setting does. On the guard path the pgvpd.* settings are superuser-only and
// set_context is what checks the token and copies its values into them. Either way the token is
// a bind parameter, never part of a statement's text.
const setContextQuery = {
  sql: "select pg_catalog.set_config('pgvpd.context', $1, false)",
  guard: 'select pgvpd.set_context($1)',
} as const;

export async function appFlow(session: Session): Promise<Attachment | undefined> {
  const runtime = session.runtime;
  const app = runtime.app;
  if (!app) throw new Error('app flow without app mode parts');
  // Pooled: counted from accept until authentication ends (the proxy authenticates, as in org
  // mode); beyond the cap refused at once.
  let authenticating: (() => void) | undefined;
  if (app.pooled) {
    authenticating = app.pooled.unauthenticated.enter(session.address);
    if (!authenticating)
      throw proxyErrors.tooManyUnauthenticated(session.address, app.pooled.unauthenticated.max);
    session.hold(authenticating);
  }
  const parameters = await session.edge.startup();
  if (parameters === undefined || session.isClosed()) return undefined;

  session.enter('route');
  const username = parameters.get('user');
  if (username === undefined || username === '') throw proxyErrors.noUser();
  const route = app.route(username);
  // Upstream sees the proxy's address, so pg_hba.conf cannot tell where a bypass user is.
  const address = session.edge.socket.remoteAddress;
  if (route.kind === 'bypass' && !app.bypassAllowed(address))
    throw proxyErrors.bypassNotFromHere(username, address ?? '?');
  const database = parameters.get('database') || route.role;
  const tenant = route.kind === 'tenant' ? route.tenant : null;
  Object.assign(session.identity, {
    tenant,
    role: route.role,
    user: route.kind === 'tenant' ? route.user : null,
    database,
  });
  session.log.info({ event: 'connect', role: route.role, tenant, database }, 'client connected');
  if (app.pooled && authenticating && route.kind === 'tenant')
    return appPooledFlow(
      session,
      app.pooled,
      route,
      username,
      database,
      parameters,
      authenticating,
    );
  // A bypass user is authenticated by PostgreSQL: no longer counted as the proxy's to check.
  authenticating?.();

  session.enter('auth');
  // A spare connection (upstream_spares) when one is ready: the server's process has started.
  const spare = app.spares?.take();
  let upstream = spare ?? (await connectUpstream(runtime.upstream));
  if (session.isClosed()) {
    upstream.socket.destroy();
    return undefined;
  }
  upstream.socket.on('error', () => undefined);
  session.hold(() => {
    if (!upstream.socket.destroyed) upstream.socket.end(serialize.end());
  });
  // Assigned one by one, as the client sent them (a `__proto__` name sets nothing).
  const startup: Record<string, string> = {};
  for (const [name, value] of parameters) startup[name] = value;
  startup.user = route.role;
  startup.database = database;
  upstream.socket.write(serialize.startup(startup));
  let first: Message | undefined;
  if (spare) {
    first = await spareAnswer(session, upstream);
    if (first === undefined) {
      // The spare's process was started while the server was not accepting connections, or
      // the server ended it: only the startup packet went, so a new connection takes over.
      upstream.socket.destroy();
      upstream = await connectUpstream(runtime.upstream);
      if (session.isClosed()) {
        upstream.socket.destroy();
        return undefined;
      }
      upstream.socket.on('error', () => undefined);
      upstream.socket.write(serialize.startup(startup));
    }
  }
  await relayAuthentication(session, upstream, route.role, first);
  session.log.info({ event: 'auth', result: 'ok' }, 'authenticated upstream');

  session.enter('context');
  // ParameterStatus, BackendKeyData and ReadyForQuery are held back until the context is set.
  const ready = await untilReady(upstream.reader, session.phase, (message) =>
    relayedFailure(session, message),
  );
  if (route.kind === 'tenant') {
    // The statement that puts the token in is parsed while the issue's round trip runs: a fresh
    // backend's parse reads cold catalog caches (the function's), which then costs nothing on
    // the path. Its text depends on the database's path, known with the token: the last one
    // seen is parsed now and replaced if the issue says otherwise. A Sync of its own ends the
    // implicit transaction the Parse opens, so the backend is idle meanwhile (no
    // statement_timeout runs while the issue takes its time); the unnamed statement stays.
    const guess = runtime.control.lastPath(database);
    upstream.socket.write(
      Buffer.concat([serialize.parse({ text: setContextQuery[guess] }), serialize.sync()]),
    );
    const issued = await issueContext(runtime.control, {
      mode: 'app',
      database,
      backendPid: ready.backend.processId,
      tenant: route.tenant,
      user: route.user,
      values: route.values,
    });
    await setContext(session, upstream, issued, issued.path === guess);
  }
  return session.attach(ready.backend, ready.held, ready.ready, () =>
    pipe({
      client: session.edge.socket,
      clientEarly: session.edge.reader.release(),
      upstream: upstream.socket,
      upstreamLate: upstream.reader.release(),
      backendPid: ready.backend.processId,
      database,
      role: route.role,
      control: runtime.control,
    }),
  );
}

/**
 * A spare's first answer to the startup packet, or undefined when the spare is stale: it closed
 * before a byte, or refused with 57P03 (the server was starting up, recovering or shutting down
 * when it started the spare's process; the state may have changed since).
 */
async function spareAnswer(session: Session, upstream: Upstream): Promise<Message | undefined> {
  let message: Message;
  try {
    message = await upstream.reader.message(maxUpstreamMessage);
  } catch (error) {
    if (error instanceof PeerClosed && !session.isClosed()) return undefined;
    // The reader keeps its failure: read again, it throws it as the proxy's error for the phase.
    return upstreamMessage(upstream.reader, session.phase);
  }
  if (message.code === BackendCode.ErrorResponse && errorFields(message.body).code === '57P03')
    return undefined;
  return message;
}

/**
 * Puts the issued context into the backend and waits for its ReadyForQuery. `parsed`: the
 * statement for the issue's path is already the backend's unnamed statement (its Parse and Sync
 * went before the issue; their answers are read here).
 */
async function setContext(
  session: Session,
  upstream: Upstream,
  issued: IssuedContext,
  parsed: boolean,
): Promise<void> {
  upstream.socket.write(
    Buffer.concat([
      ...(parsed ? [] : [serialize.parse({ text: setContextQuery[issued.path] })]),
      serialize.bind({ values: [issued.token] }),
      serialize.execute(),
      serialize.sync(),
    ]),
  );
  // Two ReadyForQuery: the early Parse's Sync's, then this one's. The first error counts (a
  // failed early Parse makes this Bind fail too), except the early Parse's when its statement
  // was the wrong guess and has been parsed again here.
  let failure: ErrorFields | undefined;
  for (let ready = 0; ready < 2;) {
    const message = await upstreamMessage(upstream.reader, session.phase);
    if (message.code === BackendCode.ErrorResponse && (parsed || ready > 0))
      failure ??= errorFields(message.body);
    if (message.code === BackendCode.ReadyForQuery) ready += 1;
  }
  if (failure)
    throw proxyErrors.contextFailed(
      failure.code,
      `${issued.path === 'sql' ? 'set_config' : 'set_context'}: ${failure.message}`,
    );
}
