// SCRAM-SHA-256 verifiers in PostgreSQL's pg_authid.rolpassword format (RFC 5802 §3, RFC 7677):
//
//   SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>
//
// In org mode the proxy authenticates end users against verifiers kept in a catalog, so it never
// sees or stores a password: a verifier lets a server check a proof but not log in as the user.
// Verifiers made here are accepted by PostgreSQL itself (`alter role … password '<verifier>'`)
// and verifiers PostgreSQL made are accepted here; the tests check both directions.
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';

/** PostgreSQL's default `scram_iterations` (SCRAM_SHA_256_DEFAULT_ITERATIONS). */
export const defaultIterations = 4096;
/** PostgreSQL's SCRAM_DEFAULT_SALT_LEN. */
export const saltLength = 16;
/** SHA-256 output: the length of StoredKey, ServerKey, proofs and signatures. */
export const keyLength = 32;
/** PostgreSQL keeps the iteration count in an int. */
const maxIterations = 2 ** 31 - 1;

export interface ScramVerifier {
  iterations: number;
  salt: Buffer;
  /** H(HMAC(SaltedPassword, "Client Key")). */
  storedKey: Buffer;
  /** HMAC(SaltedPassword, "Server Key"). */
  serverKey: Buffer;
}

/**
 * The password as SCRAM hashes it. RFC 5802 asks for SASLprep (RFC 4013); this is only its
 * normalisation step, NFKC, the same simplification ScramClient makes. For ASCII passwords and
 * almost all others the result is identical. It differs where full SASLprep would also act:
 * characters of RFC 3454 table B.1 ("mapped to nothing", e.g. U+00AD soft hyphen, zero-width
 * joiners) are kept rather than removed, a few non-ASCII spaces without a compatibility mapping
 * (U+200B) are kept rather than made U+0020, and passwords with prohibited characters (controls,
 * private use, unassigned code points), for which PostgreSQL gives up on SASLprep and hashes the
 * raw bytes, are NFKC-normalised anyway. A password of that kind may fail to log in with a libpq
 * client, which applies full SASLprep.
 */
export function saslPrep(password: string): string {
  return password.normalize('NFKC');
}

/**
 * A verifier for `password`, in rolpassword format. Salt: 16 random bytes unless given;
 * iterations: 4096 unless given. Throws RangeError for an empty password (PostgreSQL stores
 * none), an empty salt or an iteration count outside 1…2^31-1.
 */
export function makeVerifier(
  password: string,
  opts: { iterations?: number; salt?: Buffer } = {},
): string {
  const iterations = opts.iterations ?? defaultIterations;
  const salt = opts.salt ?? randomBytes(saltLength);
  if (password === '') throw new RangeError('SCRAM: empty password');
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > maxIterations) {
    throw new RangeError(`SCRAM: iteration count must be 1…${String(maxIterations)}`);
  }
  if (salt.length === 0) throw new RangeError('SCRAM: empty salt');
  const salted = pbkdf2Sync(saslPrep(password), salt, iterations, keyLength, 'sha256');
  return formatVerifier({
    iterations,
    salt,
    storedKey: sha256(hmac(salted, 'Client Key')),
    serverKey: hmac(salted, 'Server Key'),
  });
}

export function formatVerifier(verifier: ScramVerifier): string {
  const { iterations, salt, storedKey, serverKey } = verifier;
  return (
    `SCRAM-SHA-256$${String(iterations)}:${salt.toString('base64')}` +
    `$${storedKey.toString('base64')}:${serverKey.toString('base64')}`
  );
}

const verifierPattern = /^SCRAM-SHA-256\$([1-9][0-9]{0,9}):([^$:]+)\$([^$:]+):([^$:]+)$/;

/**
 * The parts of a rolpassword-format verifier, or undefined for anything else: another scheme
 * (md5…, a cleartext password), an iteration count outside 1…2^31-1 or with leading zeros,
 * base64 that is not canonical (padding, whitespace, characters outside the alphabet), an empty
 * salt, or keys that are not 32 bytes. Stricter than PostgreSQL's parse_scram_secret, which
 * tolerates e.g. leading zeros, so a catalog row that would be questionable there is refused.
 */
export function parseVerifier(text: string): ScramVerifier | undefined {
  const match = verifierPattern.exec(text);
  if (match === null) return undefined;
  const [, iterationsText = '', saltText = '', storedText = '', serverText = ''] = match;
  const iterations = Number(iterationsText);
  const salt = decodeBase64(saltText);
  const storedKey = decodeBase64(storedText);
  const serverKey = decodeBase64(serverText);
  if (
    iterations > maxIterations ||
    salt === undefined ||
    salt.length === 0 ||
    storedKey?.length !== keyLength ||
    serverKey?.length !== keyLength
  ) {
    return undefined;
  }
  return { iterations, salt, storedKey, serverKey };
}

/** Canonical base64 only: Buffer.from() skips what it does not understand, so re-encode. */
export function decodeBase64(text: string): Buffer | undefined {
  const bytes = Buffer.from(text, 'base64');
  return bytes.toString('base64') === text ? bytes : undefined;
}

const hmac = (key: Buffer, data: string | Buffer): Buffer =>
  createHmac('sha256', key).update(data).digest();
const sha256 = (data: Buffer): Buffer => createHash('sha256').update(data).digest();
