// SCRAM-SHA-256 client (RFC 5802 / RFC 7677), for the upstream logins the proxy makes itself:
// pooled logins with a configured password, app mode when both legs are TLS (the client would
// insist on channel binding to the proxy's certificate, which upstream cannot verify), and SCRAM
// pass-through: a login with the ClientKey a client's proof gave the proxy (auth/scram-server.ts)
// and the role's verifier, so that the proxy logs in as the role without its password.
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ScramVerifier } from './scram-verifier.js';

const hmac = (key: Buffer, data: string): Buffer => createHmac('sha256', key).update(data).digest();
const sha256 = (data: Buffer): Buffer => createHash('sha256').update(data).digest();

/**
 * What a SCRAM pass-through login needs: the role's verifier and the ClientKey a client's proof
 * against it revealed (H(ClientKey) is the verifier's StoredKey). Enough to answer the server's
 * challenge and to check its signature; not the password.
 */
export interface ScramKeys {
  clientKey: Buffer;
  verifier: ScramVerifier;
}

/**
 * The server's challenge does not match the verifier the keys came from (another salt or
 * iteration count): the role's password changed since the client's proof.
 */
export class ScramKeysStale extends Error {
  override name = 'ScramKeysStale';
}

/** SCRAM-SHA-256 client without channel binding ("n,,"), the username left to the startup packet. */
export class ScramClient {
  private readonly nonce = randomBytes(18).toString('base64');
  private readonly firstBare = `n=,r=${this.nonce}`;
  private serverSignature: Buffer | undefined;

  /** With the password, or with keys (SCRAM pass-through). */
  constructor(private readonly secret: string | ScramKeys) {}

  firstMessage(): string {
    return `n,,${this.firstBare}`;
  }

  /** The client-final-message for the server-first-message. */
  finalMessage(serverFirst: string): string {
    const attrs = attributes(serverFirst);
    const nonce = attrs.get('r');
    const salt = attrs.get('s');
    const iterations = Number(attrs.get('i'));
    if (nonce?.startsWith(this.nonce) !== true || nonce.length === this.nonce.length) {
      throw new Error('SCRAM: server nonce does not extend the client nonce');
    }
    if (salt === undefined || !Number.isInteger(iterations) || iterations < 1) {
      throw new Error('SCRAM: malformed server-first-message');
    }
    let clientKey: Buffer;
    let serverKey: Buffer;
    if (typeof this.secret === 'string') {
      const salted = pbkdf2Sync(
        this.secret.normalize('NFKC'),
        Buffer.from(salt, 'base64'),
        iterations,
        32,
        'sha256',
      );
      clientKey = hmac(salted, 'Client Key');
      serverKey = hmac(salted, 'Server Key');
    } else {
      const { verifier } = this.secret;
      if (!Buffer.from(salt, 'base64').equals(verifier.salt) || iterations !== verifier.iterations)
        throw new ScramKeysStale(
          "SCRAM: the server's salt or iteration count is not the verifier's (the password changed)",
        );
      clientKey = this.secret.clientKey;
      serverKey = verifier.serverKey;
    }
    const withoutProof = `c=biws,r=${nonce}`;
    const authMessage = `${this.firstBare},${serverFirst},${withoutProof}`;
    const signature = hmac(sha256(clientKey), authMessage);
    const proof = Buffer.from(clientKey.map((byte, index) => byte ^ (signature[index] ?? 0)));
    this.serverSignature = hmac(serverKey, authMessage);
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /** Checks the server's proof of knowing the verifier. */
  verifyFinal(serverFinal: string): void {
    const given = Buffer.from(attributes(serverFinal).get('v') ?? '', 'base64');
    if (
      this.serverSignature === undefined ||
      given.length !== 32 ||
      !timingSafeEqual(given, this.serverSignature)
    ) {
      throw new Error('SCRAM: server signature does not match');
    }
  }
}

function attributes(message: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const part of message.split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) map.set(part.slice(0, eq), part.slice(eq + 1));
  }
  return map;
}
