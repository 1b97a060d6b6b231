// SCRAM-SHA-256 verifiers in rolpassword format: what makeVerifier produces and what
// parseVerifier accepts. That PostgreSQL accepts them is checked in scram-postgres.test.ts.
import { pbkdf2Sync, createHash, createHmac } from 'node:crypto';
import t from 'tap';
import {
  decodeBase64,
  defaultIterations,
  formatVerifier,
  makeVerifier,
  parseVerifier,
  saltLength,
  saslPrep,
} from '../../proxy/auth/scram-verifier.js';

const b64 = '[A-Za-z0-9+/]';
const defaultShape = new RegExp(`^SCRAM-SHA-256\\$4096:${b64}{22}==\\$${b64}{43}=:${b64}{43}=$`);

t.test('makeVerifier writes PostgreSQL’s format with 4096 iterations and a 16-byte salt', (t) => {
  const verifier = makeVerifier('correct horse');
  t.match(verifier, defaultShape, 'SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>');
  const parsed = parseVerifier(verifier);
  t.equal(parsed?.iterations, defaultIterations, 'iterations default to 4096');
  t.equal(parsed?.salt.length, saltLength, 'the salt is 16 bytes');
  t.not(makeVerifier('correct horse'), verifier, 'each call draws a new salt');
  t.end();
});

t.test('makeVerifier derives the keys of RFC 5802 §3 from the given salt and count', (t) => {
  const cases = [
    { name: 'an ASCII password', password: 'pencil', salt: 'W22ZaJ0SNY7soEsUEjb6gQ==', i: 4096 },
    {
      name: 'a longer salt and more iterations',
      password: 's3cret',
      salt: 'A'.repeat(32),
      i: 10_000,
    },
    { name: 'a single iteration', password: 'x', salt: 'AQID', i: 1 },
    { name: 'a multibyte password', password: 'pässwörd 🔑', salt: 'c2FsdHNhbHQ=', i: 4096 },
  ];
  for (const c of cases) {
    const salt = Buffer.from(c.salt, 'base64');
    const salted = pbkdf2Sync(c.password, salt, c.i, 32, 'sha256');
    const clientKey = createHmac('sha256', salted).update('Client Key').digest();
    const expected = {
      iterations: c.i,
      salt,
      storedKey: createHash('sha256').update(clientKey).digest(),
      serverKey: createHmac('sha256', salted).update('Server Key').digest(),
    };
    const verifier = makeVerifier(c.password, { salt, iterations: c.i });
    t.same(parseVerifier(verifier), expected, `${c.name}: the parts are the RFC's`);
    t.equal(formatVerifier(expected), verifier, `${c.name}: formatting the parts gives it back`);
  }
  t.end();
});

t.test('makeVerifier normalises the password with NFKC, as SASLprep does', (t) => {
  const salt = Buffer.from('fixed-salt-16byt');
  const cases = [
    { name: 'a ligature', typed: 'ﬁsh', normal: 'fish' },
    { name: 'the Angstrom sign', typed: '\u212B', normal: '\u00C5' },
    { name: 'a decomposed accent', typed: 'e\u0301', normal: '\u00E9' },
    { name: 'a no-break space', typed: 'a\u00A0b', normal: 'a b' },
    { name: 'fullwidth letters', typed: 'ＡＢＣ', normal: 'ABC' },
  ];
  for (const c of cases) {
    t.equal(saslPrep(c.typed), c.normal, `${c.name} normalises`);
    t.equal(
      makeVerifier(c.typed, { salt }),
      makeVerifier(c.normal, { salt }),
      `${c.name}: both spellings give one verifier`,
    );
  }
  t.end();
});

t.test('makeVerifier refuses what PostgreSQL would not store', (t) => {
  const cases: { name: string; run: () => string }[] = [
    { name: 'an empty password', run: () => makeVerifier('') },
    { name: 'zero iterations', run: () => makeVerifier('p', { iterations: 0 }) },
    { name: 'a fractional count', run: () => makeVerifier('p', { iterations: 1.5 }) },
    { name: 'a count beyond int32', run: () => makeVerifier('p', { iterations: 2 ** 31 }) },
    { name: 'an empty salt', run: () => makeVerifier('p', { salt: Buffer.alloc(0) }) },
  ];
  for (const c of cases) t.throws(c.run, RangeError, `${c.name} is a RangeError`);
  t.end();
});

t.test('parseVerifier accepts exactly the well-formed SCRAM-SHA-256 verifiers', (t) => {
  const key = Buffer.alloc(32, 7).toString('base64');
  const salt = Buffer.alloc(16, 1).toString('base64');
  const good = `SCRAM-SHA-256$4096:${salt}$${key}:${key}`;
  const cases: { name: string; text: string; ok: boolean }[] = [
    { name: 'a well-formed verifier', text: good, ok: true },
    { name: 'the largest int32 count', text: good.replace('4096', '2147483647'), ok: true },
    { name: 'a one-byte salt', text: good.replace(salt, 'AQ=='), ok: true },
    { name: 'an md5 hash', text: 'md5' + 'a'.repeat(32), ok: false },
    { name: 'a cleartext password', text: 'hunter2', ok: false },
    { name: 'an empty string', text: '', ok: false },
    { name: 'another scheme', text: good.replace('SHA-256', 'SHA-1'), ok: false },
    { name: 'a lowercase scheme', text: good.toLowerCase(), ok: false },
    { name: 'zero iterations', text: good.replace('4096', '0'), ok: false },
    { name: 'a count with a leading zero', text: good.replace('4096', '04096'), ok: false },
    { name: 'a negative count', text: good.replace('4096', '-1'), ok: false },
    { name: 'a count beyond int32', text: good.replace('4096', '2147483648'), ok: false },
    { name: 'an empty count', text: good.replace('4096', ''), ok: false },
    { name: 'an empty salt', text: good.replace(salt, ''), ok: false },
    { name: 'a salt without padding', text: good.replace(salt, salt.replace('==', '')), ok: false },
    { name: 'a salt with a space', text: good.replace(salt, ` ${salt}`), ok: false },
    { name: 'a salt in base64url', text: good.replace(salt, '-_-_'), ok: false },
    { name: 'a 31-byte StoredKey', text: `SCRAM-SHA-256$4096:${salt}$${b(31)}:${key}`, ok: false },
    { name: 'a 33-byte ServerKey', text: `SCRAM-SHA-256$4096:${salt}$${key}:${b(33)}`, ok: false },
    { name: 'a missing ServerKey', text: `SCRAM-SHA-256$4096:${salt}$${key}`, ok: false },
    { name: 'an extra field', text: `${good}:${key}`, ok: false },
    { name: 'an extra section', text: `${good}$${key}`, ok: false },
    { name: 'a trailing newline', text: `${good}\n`, ok: false },
    { name: 'leading whitespace', text: ` ${good}`, ok: false },
  ];
  for (const c of cases) {
    const parsed = parseVerifier(c.text);
    if (c.ok) t.ok(parsed, `${c.name} is accepted`);
    else t.equal(parsed, undefined, `${c.name} is refused`);
  }
  t.end();
});

t.test('decodeBase64 accepts canonical base64 only', (t) => {
  const cases: { text: string; bytes: number[] | undefined }[] = [
    { text: 'AQID', bytes: [1, 2, 3] },
    { text: 'AQ==', bytes: [1] },
    { text: '', bytes: [] },
    { text: 'AQ', bytes: undefined },
    { text: 'AQ=', bytes: undefined },
    { text: 'AR==', bytes: undefined },
    { text: 'AQ ID', bytes: undefined },
    { text: 'A-_B', bytes: undefined },
  ];
  for (const c of cases) {
    const decoded = decodeBase64(c.text);
    t.same(
      decoded === undefined ? undefined : [...decoded],
      c.bytes,
      `${JSON.stringify(c.text)} ${c.bytes === undefined ? 'is refused' : 'decodes'}`,
    );
  }
  t.end();
});

function b(length: number): string {
  return Buffer.alloc(length, 9).toString('base64');
}
