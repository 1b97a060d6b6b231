// The /setup page's SCRAM-SHA-256 verifier (proxy/admin/setup/setup.js, computed with WebCrypto
// in the browser) is byte for byte pgvpd's makeVerifier (proxy/auth/scram-verifier.ts) for the
// same password, salt and iterations, non-ASCII passwords included, so a password chosen on the
// page logs in through the proxy and on PostgreSQL itself. The page's script is evaluated as the
// browser would run it, in a fresh global with WebCrypto but no DOM: there it defines its pure
// functions and touches nothing else (it has no fetch to call).
import { readFileSync } from 'node:fs';
import vm from 'node:vm';
import t from 'tap';
import { makeVerifier, parseVerifier } from '../../proxy/auth/scram-verifier.js';

interface Connection {
  host: string;
  port: number | string;
  database: string;
  user: string;
}

interface SetupPure {
  defaultIterations: number;
  minPasswordLength: number;
  saslPrep(password: string): string;
  scramVerifier(password: string, salt?: Uint8Array, iterations?: number): Promise<string>;
  inviteFromHash(hash: string): string;
  passwordProblem(password: string, confirm: string): string;
  iterationsFrom(info: unknown): number;
  pgpassLine(connection: Connection): string;
}

const source = readFileSync(new URL('../../proxy/admin/setup/setup.js', import.meta.url), 'utf8');

/** setup.js run in a global with what a browser gives it, except a document. */
function loadSetup(): { pure: SetupPure; global: Record<string, unknown> } {
  const global: Record<string, unknown> = {
    crypto: globalThis.crypto,
    TextEncoder,
    URLSearchParams,
    btoa,
  };
  vm.createContext(global);
  vm.runInContext(source, global, { filename: 'setup.js' });
  return { pure: global.pgvpdSetup as SetupPure, global };
}

const { pure, global } = loadSetup();

t.test('without a DOM the script only defines its functions', (t) => {
  t.same(Object.keys(global).sort(), [
    'TextEncoder',
    'URLSearchParams',
    'btoa',
    'crypto',
    'pgvpdSetup',
  ]);
  t.ok(Object.isFrozen(pure));
  t.equal(pure.defaultIterations, 4096);
  t.equal(pure.minPasswordLength, 12);
  t.end();
});

const passwords: [string, string][] = [
  ['an ASCII password', 'correct horse battery staple'],
  ['a password with accents and a ligature NFKC rewrites', 'pässwörd-ﬁ-Ⅻ-ｆｕｌｌ'],
  ['a password outside the BMP', 'мой пароль 🔑 密码'],
  ['a decomposed accent NFKC composes', 'cafe\u0301 au lait!'],
];

for (const [what, password] of passwords) {
  t.test(`the page's verifier equals makeVerifier for ${what}`, async (t) => {
    for (const iterations of [4096, 1, 10_000]) {
      for (const saltHex of ['00112233445566778899aabbccddeeff', 'ff', 'a1'.repeat(32)]) {
        const salt = Buffer.from(saltHex, 'hex');
        t.equal(
          await pure.scramVerifier(password, new Uint8Array(salt), iterations),
          makeVerifier(password, { salt, iterations }),
          `${String(iterations)} iterations, salt ${saltHex}`,
        );
      }
    }
  });
}

t.test('NFKC makes equivalent spellings one password, as on the server', async (t) => {
  const salt = Buffer.alloc(16, 7);
  const composed = await pure.scramVerifier('café', new Uint8Array(salt), 4096);
  t.equal(await pure.scramVerifier('cafe\u0301', new Uint8Array(salt), 4096), composed);
  t.equal(pure.saslPrep('ﬁ'), 'fi');
  t.not(await pure.scramVerifier('cafe', new Uint8Array(salt), 4096), composed);
});

t.test('without a salt the page draws 16 random bytes and 4096 iterations', async (t) => {
  const password = 'a fresh salt every time';
  const first = await pure.scramVerifier(password);
  const second = await pure.scramVerifier(password);
  t.not(first, second, 'two verifiers of one password differ by their salt');
  for (const verifier of [first, second]) {
    const parsed = parseVerifier(verifier);
    if (parsed === undefined) throw new Error(`not a verifier: ${verifier}`);
    t.equal(parsed.iterations, 4096);
    t.equal(parsed.salt.length, 16);
    t.equal(makeVerifier(password, { salt: parsed.salt, iterations: 4096 }), verifier);
  }
});

t.test('what makeVerifier refuses the page refuses too', async (t) => {
  await t.rejects(pure.scramVerifier('', new Uint8Array(16), 4096), {
    name: 'RangeError',
    message: 'SCRAM: empty password',
  });
  await t.rejects(pure.scramVerifier('pw', new Uint8Array(0), 4096), {
    name: 'RangeError',
    message: 'SCRAM: empty salt',
  });
  for (const iterations of [0, 1.5, 2 ** 31]) {
    await t.rejects(pure.scramVerifier('pw', new Uint8Array(16), iterations), {
      name: 'RangeError',
      message: 'SCRAM: iteration count must be 1…2147483647',
    });
  }
});

t.test('the invite is read from the fragment only', (t) => {
  const invite = `pgvpd_inv_${'ab'.repeat(32)}0123abcd`;
  t.equal(pure.inviteFromHash(`#invite=${invite}`), invite);
  t.equal(pure.inviteFromHash(`invite=${invite}`), invite);
  t.equal(pure.inviteFromHash(`#x=1&invite=${invite}`), invite);
  t.equal(pure.inviteFromHash(''), '');
  t.equal(pure.inviteFromHash('#'), '');
  t.equal(pure.inviteFromHash('#token=abc'), '');
  t.end();
});

t.test('a password needs 12 characters (not bytes) and the same twice', (t) => {
  const short = 'Choose a password of at least 12 characters.';
  t.equal(pure.passwordProblem('elevenchars', 'elevenchars'), short);
  t.equal(pure.passwordProblem('🔑'.repeat(11), '🔑'.repeat(11)), short, '11 characters, 44 bytes');
  t.equal(pure.passwordProblem('🔑'.repeat(12), '🔑'.repeat(12)), '');
  t.equal(pure.passwordProblem('twelve chars', 'twelve chars'), '');
  t.equal(pure.passwordProblem('twelve chars', 'twelve charz'), 'The two passwords differ.');
  t.end();
});

t.test('the iteration count comes from /info, 4096 when it names none usable', (t) => {
  t.equal(pure.iterationsFrom({ scram_iterations: 8192 }), 8192);
  t.equal(pure.iterationsFrom({ scram_iterations: 4096 }), 4096);
  for (const info of [{}, null, { scram_iterations: '8192' }, { scram_iterations: 0 }]) {
    t.equal(pure.iterationsFrom(info), 4096, JSON.stringify(info));
  }
  t.end();
});

t.test('the .pgpass line holds a placeholder and escapes : and \\', (t) => {
  t.equal(
    pure.pgpassLine({ host: 'db.example.com', port: 6432, database: 'acme', user: 'alice' }),
    'db.example.com:6432:acme:alice:<your password>',
  );
  t.equal(
    pure.pgpassLine({ host: '::1', port: '5432', database: 'a\\b', user: 'u:v' }),
    '\\:\\:1:5432:a\\\\b:u\\:v:<your password>',
  );
  t.end();
});
