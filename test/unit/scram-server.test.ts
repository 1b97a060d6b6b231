// The proxy's SCRAM-SHA-256 server against three clients (the proxy's own ScramClient, node-
// postgres' SASL functions and an RFC 5802 client written here), the RFC 7677 test vector,
// unknown users, and every way a client can get the exchange wrong.
import { createHmac, createHash, pbkdf2Sync, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { serialize } from '../../proxy/protocol/encode.js';
import t from 'tap';
import { ProxyError } from '../../proxy/errors.js';
import { ScramClient } from '../../proxy/auth/scram-client.js';
import { ProtocolViolation } from '../../proxy/protocol/reader.js';
import {
  ScramProtocolError,
  ScramServer,
  decodeSASLInitialResponse,
  decodeSASLResponse,
  mockSalt,
  newMockSecret,
  parseClientFinal,
  parseClientFirst,
  scramMechanism,
  serverSignature,
  verifyClientProof,
  type ScramOutcome,
} from '../../proxy/auth/scram-server.js';
import {
  makeVerifier,
  parseVerifier,
  type ScramVerifier,
} from '../../proxy/auth/scram-verifier.js';

// ---- clients ----

/** node-postgres' own SCRAM client (pg/lib/crypto/sasl.js), untyped upstream. */
interface PgSaslSession {
  response: string;
}
interface PgSasl {
  startSession(mechanisms: string[], stream?: object): PgSaslSession;
  continueSession(
    session: PgSaslSession,
    password: string,
    serverData: string,
    stream?: object,
  ): Promise<void>;
  finalizeSession(session: PgSaslSession, serverData: string): void;
}
const pgSasl = createRequire(import.meta.url)('pg/lib/crypto/sasl.js') as PgSasl;

/** RFC 5802 §3 written out from the RFC, with knobs to misbehave. */
class RfcClient {
  readonly nonce: string;
  readonly bare: string;
  private expectedSignature = '';

  constructor(
    private readonly password: string,
    private readonly opts: {
      gs2?: string;
      user?: string;
      nonce?: string;
      extensions?: string;
    } = {},
  ) {
    this.nonce = opts.nonce ?? randomBytes(24).toString('base64url');
    this.bare = `n=${opts.user ?? ''},r=${this.nonce}${opts.extensions ?? ''}`;
  }

  first(): string {
    return `${this.opts.gs2 ?? 'n,,'}${this.bare}`;
  }

  final(
    serverFirst: string,
    tamper: { binding?: string; nonce?: string; extensions?: string; flipProofBit?: boolean } = {},
  ): string {
    const fields = new Map(serverFirst.split(',').map((part) => [part[0], part.slice(2)]));
    const salt = Buffer.from(fields.get('s') ?? '', 'base64');
    const salted = pbkdf2Sync(
      this.password.normalize('NFKC'),
      salt,
      Number(fields.get('i')),
      32,
      'sha256',
    );
    const clientKey = createHmac('sha256', salted).update('Client Key').digest();
    const storedKey = createHash('sha256').update(clientKey).digest();
    const binding =
      tamper.binding ?? Buffer.from((this.opts.gs2 ?? 'n,,').slice(0, 3)).toString('base64');
    const withoutProof = `c=${binding},r=${tamper.nonce ?? fields.get('r') ?? ''}${tamper.extensions ?? ''}`;
    const authMessage = `${this.bare},${serverFirst},${withoutProof}`;
    const signature = createHmac('sha256', storedKey).update(authMessage).digest();
    const proof = Buffer.from(clientKey.map((byte, i) => byte ^ (signature[i] ?? 0)));
    if (tamper.flipProofBit === true) proof[0] = (proof[0] ?? 0) ^ 1;
    const serverKey = createHmac('sha256', salted).update('Server Key').digest();
    this.expectedSignature = createHmac('sha256', serverKey).update(authMessage).digest('base64');
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  serverFinalIsRight(serverFinal: string): boolean {
    return serverFinal === `v=${this.expectedSignature}`;
  }
}

// ---- helpers ----

const secret = newMockSecret();

function serverFor(password: string, opts?: { iterations?: number; salt?: Buffer }): ScramServer {
  const verifier = parseVerifier(makeVerifier(password, opts));
  if (verifier === undefined) throw new Error('makeVerifier made an unparsable verifier');
  return ScramServer.forVerifier('alice', verifier);
}

/** The message of the ScramProtocolError `run` throws, or a description of what happened. */
function protocolError(run: () => unknown): string {
  try {
    run();
    return 'no error';
  } catch (error) {
    if (error instanceof ScramProtocolError && error instanceof ProtocolViolation) {
      return error.message;
    }
    return `another error: ${String(error)}`;
  }
}

function failure(outcome: ScramOutcome): ProxyError | undefined {
  return outcome.ok ? undefined : outcome.error;
}

const nonceOf = (serverFirst: string): string => /^r=([^,]+)/.exec(serverFirst)?.[1] ?? '';
const saltOf = (serverFirst: string): string => /,s=([^,]+)/.exec(serverFirst)?.[1] ?? '';

// ---- successful exchanges ----

t.test(
  'a client with the right password completes the exchange and verifies the server',
  async (t) => {
    const cases: {
      name: string;
      password: string;
      /** What the client types, when not the password itself. */
      typed?: string;
      verifier?: { iterations?: number; salt?: Buffer };
      client: 'proxy' | 'pg' | 'pg-y' | 'rfc' | 'rfc-extensions' | 'rfc-y';
    }[] = [
      { name: 'the proxy’s own ScramClient (n=)', password: 'hunter2', client: 'proxy' },
      { name: 'node-postgres without TLS (n,,n=*)', password: 'hunter2', client: 'pg' },
      { name: 'node-postgres over TLS, gs2 header y', password: 'hunter2', client: 'pg-y' },
      { name: 'an RFC 5802 client naming a user', password: 'hunter2', client: 'rfc' },
      { name: 'an RFC client with gs2 header y', password: 'hunter2', client: 'rfc-y' },
      { name: 'an RFC client sending extensions', password: 'hunter2', client: 'rfc-extensions' },
      { name: 'a multibyte password', password: 'pässwörd 🔑', client: 'pg' },
      { name: 'an NFKC-equivalent spelling', password: 'ﬁsh', typed: 'fish', client: 'pg' },
      { name: 'the other spelling', password: 'fish', typed: 'ﬁsh', client: 'proxy' },
      {
        name: 'a verifier with 10000 iterations and a 32-byte salt',
        password: 'hunter2',
        verifier: { iterations: 10_000, salt: randomBytes(32) },
        client: 'rfc',
      },
    ];
    for (const c of cases) {
      const server = serverFor(c.password, c.verifier);
      const typed = c.typed ?? c.password;
      let verified: boolean;
      switch (c.client) {
        case 'proxy': {
          const client = new ScramClient(typed);
          const serverFirst = server.receiveClientFirst(scramMechanism, client.firstMessage());
          const outcome = server.receiveClientFinal(client.finalMessage(serverFirst));
          if (!outcome.ok) throw outcome.error;
          client.verifyFinal(outcome.serverFinal);
          verified = true;
          break;
        }
        case 'pg':
        case 'pg-y': {
          const stream = c.client === 'pg-y' ? {} : undefined;
          const session = pgSasl.startSession([scramMechanism], stream);
          const serverFirst = server.receiveClientFirst(scramMechanism, session.response);
          await pgSasl.continueSession(session, typed, serverFirst, stream);
          const outcome = server.receiveClientFinal(session.response);
          if (!outcome.ok) throw outcome.error;
          pgSasl.finalizeSession(session, outcome.serverFinal);
          verified = true;
          break;
        }
        case 'rfc':
        case 'rfc-y':
        case 'rfc-extensions': {
          const client = new RfcClient(typed, {
            user: 'someone-else',
            ...(c.client === 'rfc-y' ? { gs2: 'y,,' } : {}),
            ...(c.client === 'rfc-extensions' ? { extensions: ',x=first-ext,Z=' } : {}),
          });
          const serverFirst = server.receiveClientFirst(scramMechanism, client.first());
          const outcome = server.receiveClientFinal(
            client.final(
              serverFirst,
              c.client === 'rfc-extensions' ? { extensions: ',q=final-ext' } : {},
            ),
          );
          if (!outcome.ok) throw outcome.error;
          verified = client.serverFinalIsRight(outcome.serverFinal);
          break;
        }
      }
      t.ok(verified, `${c.name}: authenticated, and the client accepted the server signature`);
    }
  },
);

t.test('the server-first-message extends the client nonce with 18 random bytes', (t) => {
  const client = new RfcClient('pw', { nonce: 'abc' });
  const first = serverFor('pw').receiveClientFirst(scramMechanism, client.first());
  const again = serverFor('pw').receiveClientFirst(scramMechanism, client.first());
  t.match(first, /^r=abc[A-Za-z0-9+/]{24},s=[A-Za-z0-9+/]{22}==,i=4096$/, 'r=, s=, i= in order');
  t.not(nonceOf(first), nonceOf(again), 'each exchange has its own server nonce');
  t.end();
});

t.test('the RFC 7677 test vector verifies', (t) => {
  // RFC 7677 §3: user "user", password "pencil".
  const clientFirst = 'n,,n=user,r=rOprNGfwEbeRWgbNEkqO';
  const serverFirst =
    'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096';
  const clientFinal =
    'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=';
  const serverFinal = 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=';

  const verifier = parseVerifier(
    makeVerifier('pencil', { salt: Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64') }),
  ) as ScramVerifier;
  const first = parseClientFirst(clientFirst);
  const final = parseClientFinal(clientFinal);
  t.same(
    { flag: first.cbindFlag, user: first.username, nonce: first.nonce },
    { flag: 'n', user: 'user', nonce: 'rOprNGfwEbeRWgbNEkqO' },
    'the client-first-message parses',
  );
  const authMessage = `${first.bare},${serverFirst},${final.withoutProof}`;
  t.ok(verifyClientProof(verifier.storedKey, authMessage, final.proof), 'the proof holds');
  t.equal(
    `v=${serverSignature(verifier.serverKey, authMessage).toString('base64')}`,
    serverFinal,
    'the server signature is the RFC’s',
  );
  const flipped = Buffer.from(final.proof);
  flipped[31] = (flipped[31] ?? 0) ^ 0x80;
  t.notOk(verifyClientProof(verifier.storedKey, authMessage, flipped), 'one flipped bit fails');
  t.end();
});

// ---- failures that are 28P01 ----

t.test('a wrong password fails with 28P01 and PostgreSQL’s message', (t) => {
  const cases = [
    { name: 'a wrong password', typed: 'hunter3' },
    { name: 'a case difference', typed: 'Hunter2' },
    { name: 'a trailing space', typed: 'hunter2 ' },
  ];
  for (const c of cases) {
    const server = serverFor('hunter2');
    const client = new RfcClient(c.typed);
    const outcome = server.receiveClientFinal(
      client.final(server.receiveClientFirst(scramMechanism, client.first())),
    );
    const error = failure(outcome);
    t.same(
      { code: error?.code, message: error?.message, kind: error?.kind },
      {
        code: '28P01',
        message: 'password authentication failed for user "alice"',
        kind: 'password_authentication_failed',
      },
      `${c.name} is refused`,
    );
    t.match(error?.logMessage, /wrong password$/, `${c.name}: the log says why`);
  }
  t.end();
});

t.test('a tampered proof is an authentication failure, not a protocol error', (t) => {
  const server = serverFor('hunter2');
  const client = new RfcClient('hunter2');
  const serverFirst = server.receiveClientFirst(scramMechanism, client.first());
  const outcome = server.receiveClientFinal(client.final(serverFirst, { flipProofBit: true }));
  t.equal(failure(outcome)?.code, '28P01');
  t.end();
});

t.test('an unknown user gets an exchange that looks real and fails like a wrong password', (t) => {
  const known = serverFor('hunter2');
  const unknown = ScramServer.forUnknownUser('alice', secret);
  const client = new RfcClient('hunter2', { nonce: 'same-nonce' });
  const shape = /^r=same-nonce[A-Za-z0-9+/]{24},s=[A-Za-z0-9+/]{22}==,i=4096$/;
  const knownFirst = known.receiveClientFirst(scramMechanism, client.first());
  const unknownFirst = unknown.receiveClientFirst(scramMechanism, client.first());
  t.match(knownFirst, shape, 'a known user’s server-first-message has the shape');
  t.match(unknownFirst, shape, 'an unknown user’s has the same shape');

  const knownError = failure(known.receiveClientFinal(new RfcClient('wrong').final(knownFirst)));
  const unknownError = failure(unknown.receiveClientFinal(client.final(unknownFirst)));
  t.same(
    { code: unknownError?.code, message: unknownError?.message, kind: unknownError?.kind },
    { code: knownError?.code, message: knownError?.message, kind: knownError?.kind },
    'the client reads the same error for an unknown user as for a wrong password',
  );
  t.equal(unknownError?.code, '28P01', 'which is 28P01');
  t.match(unknownError?.logMessage, /no such user$/, 'only the log tells them apart');
  t.end();
});

t.test('an unknown user’s salt is fixed per name and proxy, and differs between them', (t) => {
  const saltFor = (name: string, key: Buffer): string =>
    saltOf(
      ScramServer.forUnknownUser(name, key).receiveClientFirst(
        scramMechanism,
        new RfcClient('x').first(),
      ),
    );
  const other = newMockSecret();
  t.equal(saltFor('mallory', secret), saltFor('mallory', secret), 'repeated attempts, same salt');
  t.equal(
    saltFor('mallory', secret),
    mockSalt('mallory', secret).toString('base64'),
    'the salt is mockSalt(name, secret)',
  );
  t.not(saltFor('mallory', secret), saltFor('mallory2', secret), 'another name, another salt');
  t.not(saltFor('mallory', secret), saltFor('mallory', other), 'another proxy, another salt');
  t.equal(mockSalt('mallory', secret).length, 16, 'as long as a real default salt');
  t.end();
});

t.test('an unknown user’s exchange uses the iteration count it is given', (t) => {
  const first = ScramServer.forUnknownUser('mallory', secret, 10_000).receiveClientFirst(
    scramMechanism,
    new RfcClient('x').first(),
  );
  t.match(first, /,i=10000$/);
  t.end();
});

t.test('forUser picks a real exchange for a verifier and a mock one for anything else', (t) => {
  const verifier = makeVerifier('hunter2');
  const cases: { name: string; stored: string | null | undefined; ok: boolean; log?: RegExp }[] = [
    { name: 'a valid verifier', stored: verifier, ok: true },
    { name: 'no catalog row', stored: undefined, ok: false, log: /no such user$/ },
    { name: 'a null password', stored: null, ok: false, log: /no such user$/ },
    {
      name: 'an md5 hash',
      stored: 'md5' + 'a'.repeat(32),
      ok: false,
      log: /not a SCRAM verifier$/,
    },
    { name: 'a cleartext password', stored: 'hunter2', ok: false, log: /not a SCRAM verifier$/ },
  ];
  for (const c of cases) {
    const server = ScramServer.forUser('alice', c.stored, secret);
    const client = new RfcClient('hunter2');
    const outcome = server.receiveClientFinal(
      client.final(server.receiveClientFirst(scramMechanism, client.first())),
    );
    t.equal(outcome.ok, c.ok, `${c.name}: ${c.ok ? 'the right password logs in' : 'refused'}`);
    if (c.log !== undefined) t.match(failure(outcome)?.logMessage, c.log, `${c.name}: logged`);
  }
  t.end();
});

// ---- protocol errors (08P01) ----

t.test('a bad SASLInitialResponse is a protocol error', (t) => {
  const cases: { name: string; mechanism?: string; first: string; error: RegExp }[] = [
    {
      name: 'the -PLUS mechanism, which is not offered',
      mechanism: 'SCRAM-SHA-256-PLUS',
      first: 'p=tls-server-end-point,,n=,r=abc',
      error: /invalid SASL authentication mechanism "SCRAM-SHA-256-PLUS"/,
    },
    { name: 'another mechanism', mechanism: 'PLAIN', first: 'n,,n=,r=abc', error: /mechanism/ },
    {
      name: 'channel binding requested',
      first: 'p=tls-server-end-point,,n=,r=abc',
      error: /includes channel binding data/,
    },
    { name: 'an unknown gs2 flag', first: 'x,,n=,r=abc', error: /channel-binding flag "x"/ },
    { name: 'an empty message', first: '', error: /channel-binding flag/ },
    { name: 'a flag alone', first: 'n', error: /comma expected/ },
    { name: 'a missing second comma', first: 'n,n=,r=abc', error: /unexpected attribute "n"/ },
    { name: 'an authzid', first: 'n,a=bob,n=,r=abc', error: /authorization identity/ },
    {
      name: 'a mandatory extension',
      first: 'n,,m=ext,n=,r=abc',
      error: /unsupported SCRAM extension/,
    },
    { name: 'no user attribute', first: 'n,,r=abc', error: /expected attribute "n"/ },
    { name: 'no nonce', first: 'n,,n=', error: /expected attribute "r" but found end/ },
    { name: 'an empty nonce', first: 'n,,n=,r=', error: /nonce/ },
    { name: 'a nonce with a space', first: 'n,,n=,r=ab c', error: /printable/ },
    { name: 'a non-ASCII nonce', first: 'n,,n=,r=abé', error: /printable/ },
    { name: 'a bad extension', first: 'n,,n=,r=abc,1=x', error: /attribute expected/ },
    { name: 'a trailing comma', first: 'n,,n=,r=abc,', error: /empty attribute/ },
    { name: 'a null byte', first: 'n,,n=,r=abc\0', error: /null byte/ },
  ];
  for (const c of cases) {
    const server = serverFor('pw');
    t.match(
      protocolError(() => server.receiveClientFirst(c.mechanism ?? scramMechanism, c.first)),
      c.error,
      `${c.name} is refused`,
    );
  }
  t.end();
});

t.test('a bad client-final-message is a protocol error', (t) => {
  const cases: {
    name: string;
    gs2?: string;
    final: (client: RfcClient, serverFirst: string) => string;
    error: RegExp;
  }[] = [
    {
      name: 'channel binding "y" after "n"',
      final: (c, s) => c.final(s, { binding: 'eSws' }),
      error: /channel-binding attribute/,
    },
    {
      name: 'channel binding "n" after "y"',
      gs2: 'y,,',
      final: (c, s) => c.final(s, { binding: 'biws' }),
      error: /channel-binding attribute/,
    },
    {
      name: 'channel binding data',
      final: (c, s) =>
        c.final(s, { binding: Buffer.from('p=tls-server-end-point,,x').toString('base64') }),
      error: /channel-binding attribute/,
    },
    {
      name: 'the client nonce alone',
      final: (c, s) => c.final(s, { nonce: c.nonce }),
      error: /nonce does not match/,
    },
    {
      name: 'a nonce with a character added',
      final: (c, s) => c.final(s, { nonce: `${nonceOf(s)}x` }),
      error: /nonce does not match/,
    },
    {
      name: 'another server nonce',
      final: (c, s) => c.final(s, { nonce: c.nonce + randomBytes(18).toString('base64') }),
      error: /nonce does not match/,
    },
    {
      name: 'no proof',
      final: (c, s) => c.final(s).replace(/,p=.*$/, ''),
      error: /no proof/,
    },
    {
      name: 'a proof that is not base64',
      final: (c, s) => c.final(s).replace(/p=.*$/, 'p=!!!!'),
      error: /malformed proof/,
    },
    {
      name: 'a 31-byte proof',
      final: (c, s) => c.final(s).replace(/p=.*$/, `p=${Buffer.alloc(31).toString('base64')}`),
      error: /malformed proof/,
    },
    {
      name: 'a 33-byte proof',
      final: (c, s) => c.final(s).replace(/p=.*$/, `p=${Buffer.alloc(33).toString('base64')}`),
      error: /malformed proof/,
    },
    {
      name: 'an attribute after the proof',
      final: (c, s) => `${c.final(s)},x=1`,
      error: /garbage/,
    },
    {
      name: 'no channel binding',
      final: (c, s) => c.final(s).replace(/^c=[^,]*,/, ''),
      error: /expected attribute "c" but found "r"/,
    },
    {
      name: 'nonce before channel binding',
      final: (c, s) => {
        const [cb, r, p] = c.final(s).split(',');
        return [r, cb, p].join(',');
      },
      error: /expected attribute "c"/,
    },
    { name: 'an empty message', final: () => '', error: /empty attribute/ },
    {
      name: 'a null byte',
      final: (c, s) => `${c.final(s)}\0`,
      error: /null byte/,
    },
  ];
  for (const c of cases) {
    const server = serverFor('pw');
    const client = new RfcClient('pw', c.gs2 === undefined ? {} : { gs2: c.gs2 });
    const serverFirst = server.receiveClientFirst(scramMechanism, client.first());
    t.match(
      protocolError(() => server.receiveClientFinal(c.final(client, serverFirst))),
      c.error,
      `${c.name} is refused`,
    );
  }
  t.end();
});

t.test('an unknown user’s exchange refuses a tampered nonce the same way', (t) => {
  const server = ScramServer.forUnknownUser('mallory', secret);
  const client = new RfcClient('pw');
  const serverFirst = server.receiveClientFirst(scramMechanism, client.first());
  t.match(
    protocolError(() =>
      server.receiveClientFinal(client.final(serverFirst, { nonce: client.nonce })),
    ),
    /nonce does not match/,
  );
  t.end();
});

t.test('messages out of order end the exchange with a protocol error', (t) => {
  const client = new RfcClient('pw');
  const cases: { name: string; run: (server: ScramServer) => unknown; error: RegExp }[] = [
    {
      name: 'a client-final-message first',
      run: (server) => server.receiveClientFinal('c=biws,r=abc,p=AAAA'),
      error: /unexpected client-final-message/,
    },
    {
      name: 'a second client-first-message',
      run: (server) => {
        server.receiveClientFirst(scramMechanism, client.first());
        return server.receiveClientFirst(scramMechanism, client.first());
      },
      error: /unexpected client-first-message/,
    },
    {
      name: 'a message after a finished exchange',
      run: (server) => {
        const serverFirst = server.receiveClientFirst(scramMechanism, client.first());
        server.receiveClientFinal(client.final(serverFirst));
        return server.receiveClientFinal(client.final(serverFirst));
      },
      error: /unexpected client-final-message/,
    },
    {
      name: 'a message after a malformed one',
      run: (server) => {
        try {
          server.receiveClientFirst(scramMechanism, 'garbage');
        } catch {
          // expected; the exchange is over
        }
        return server.receiveClientFirst(scramMechanism, client.first());
      },
      error: /unexpected client-first-message/,
    },
  ];
  for (const c of cases) {
    t.match(
      protocolError(() => c.run(serverFor('pw'))),
      c.error,
      `${c.name} is refused`,
    );
  }
  t.end();
});

// ---- the frontend messages ----

t.test('SASLInitialResponse and SASLResponse decode from what node-postgres sends', (t) => {
  const initial = serialize.sendSASLInitialResponseMessage(scramMechanism, 'n,,n=*,r=abcé');
  t.same(
    decodeSASLInitialResponse(initial.subarray(5)),
    { mechanism: scramMechanism, data: 'n,,n=*,r=abcé' },
    'mechanism and client-first-message',
  );
  const response = serialize.sendSCRAMClientFinalMessage('c=biws,r=abc,p=AAAA');
  t.equal(decodeSASLResponse(response.subarray(5)), 'c=biws,r=abc,p=AAAA', 'client-final');
  t.end();
});

t.test('a malformed SASL message body is a protocol error', (t) => {
  const mechanism = Buffer.from(`${scramMechanism}\0`);
  const int32 = (n: number): Buffer => {
    const out = Buffer.alloc(4);
    out.writeInt32BE(n);
    return out;
  };
  const data = Buffer.from('n,,n=,r=abc');
  const cases: { name: string; body: Buffer; decode?: 'final'; error: RegExp }[] = [
    { name: 'no mechanism terminator', body: Buffer.from(scramMechanism), error: /no mechanism/ },
    {
      name: 'no length',
      body: Buffer.concat([mechanism, Buffer.from([0, 0])]),
      error: /too short/,
    },
    {
      name: 'length -1 (no initial response)',
      body: Buffer.concat([mechanism, int32(-1)]),
      error: /no client-first-message/,
    },
    {
      name: 'a length past the end',
      body: Buffer.concat([mechanism, int32(data.length + 1), data]),
      error: /length does not match/,
    },
    {
      name: 'a length short of the end',
      body: Buffer.concat([mechanism, int32(data.length - 1), data]),
      error: /length does not match/,
    },
    {
      name: 'invalid UTF-8 in the mechanism',
      body: Buffer.concat([Buffer.from([0xff, 0]), int32(data.length), data]),
      error: /invalid UTF-8 in SASLInitialResponse mechanism/,
    },
    {
      name: 'invalid UTF-8 in the client-first-message',
      body: Buffer.concat([mechanism, int32(2), Buffer.from([0xc3, 0x28])]),
      error: /invalid UTF-8 in client-first-message/,
    },
    {
      name: 'invalid UTF-8 in the client-final-message',
      body: Buffer.from([0x63, 0x3d, 0xe2, 0x82]),
      decode: 'final',
      error: /invalid UTF-8 in client-final-message/,
    },
  ];
  for (const c of cases) {
    const decode =
      c.decode === 'final'
        ? () => decodeSASLResponse(c.body)
        : () => decodeSASLInitialResponse(c.body);
    t.match(protocolError(decode), c.error, `${c.name} is refused`);
  }
  t.end();
});
