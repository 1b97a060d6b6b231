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
import { errorFields, upstreamMessage, type ErrorFields } from '../protocol/decode.js';
import type { Attachment } from '../session/attachment.js';
import type { Session } from '../session/lifecycle.js';
import { pipe } from '../session/pipe.js';
import { connectUpstream, type Upstream } from '../upstream/connect.js';
import { issueContext } from '../upstream/control.js';
import { untilReady } from '../upstream/ready.js';
import { appPooledFlow } from './pooled-flow.js';
import { relayAuthentication, relayedFailure } from './relay-auth.js';

// The token goes in through pgvpd.set_context, as a bind parameter: one function on both context
// paths. It checks the token against the record issue_context wrote; where the server has loaded
// the guard module it also copies the verified values into settings no client can set, which the
// built-in set_config could not do (the module makes pgvpd.* superuser-only).
const setContextQuery = 'select pgvpd.set_context($1)';

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
  const upstream = await connectUpstream(runtime.upstream);
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
  await relayAuthentication(session, upstream, route.role);
  session.log.info({ event: 'auth', result: 'ok' }, 'authenticated upstream');

  session.enter('context');
  // ParameterStatus, BackendKeyData and ReadyForQuery are held back until the context is set.
  const ready = await untilReady(upstream.reader, session.phase, (message) =>
    relayedFailure(session, message),
  );
  if (route.kind === 'tenant') {
    const token = await issueContext(runtime.control, {
      mode: 'app',
      database,
      backendPid: ready.backend.processId,
      tenant: route.tenant,
      user: route.user,
      values: route.values,
    });
    await setContext(session, upstream, token);
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

/** Sets the issued context on the backend and waits for its ReadyForQuery. */
async function setContext(session: Session, upstream: Upstream, token: string): Promise<void> {
  upstream.socket.write(
    Buffer.concat([
      serialize.parse({ text: setContextQuery }),
      serialize.bind({ values: [token] }),
      serialize.execute(),
      serialize.sync(),
    ]),
  );
  let failure: ErrorFields | undefined;
  for (;;) {
    const message = await upstreamMessage(upstream.reader, session.phase);
    if (message.code === BackendCode.ErrorResponse) failure ??= errorFields(message.body);
    if (message.code === BackendCode.ReadyForQuery) break;
  }
  if (failure) throw proxyErrors.contextFailed(failure.code, `set_context: ${failure.message}`);
}
