// The proxy hands each client a BackendKeyData of its own and remembers which upstream backend
// it stands for, so a CancelRequest reaches the right backend and a client never learns (or
// can guess from its own key) an upstream secret.
import { randomInt } from 'node:crypto';
import { sendCancel, type UpstreamTarget } from '../upstream/connect.js';

export interface CancelTarget {
  processId: number;
  secretKey: number;
  /** The backend's server, when it is not the proxy's configured upstream (org mode). */
  upstream?: UpstreamTarget | undefined;
  /**
   * Where the backend changes during the client's life (transaction pooling): sends the cancel
   * to whichever backend the client holds at that moment, or nowhere. Replaces the fixed target.
   */
  forward?: () => Promise<void>;
}

export class CancelKeys {
  private readonly keys = new Map<string, CancelTarget>();

  /** A fresh (processId, secretKey) pair for the client, mapped to the upstream backend. */
  issue(target: CancelTarget): { processId: number; secretKey: number } {
    for (;;) {
      const processId = randomInt(1, 0x7fffffff);
      const secretKey = randomInt(-0x80000000, 0x7fffffff);
      const key = keyOf(processId, secretKey);
      if (this.keys.has(key)) continue;
      this.keys.set(key, target);
      return { processId, secretKey };
    }
  }

  find(processId: number, secretKey: Buffer): CancelTarget | undefined {
    if (secretKey.length !== 4) return undefined;
    return this.keys.get(keyOf(processId, secretKey.readInt32BE(0)));
  }

  /**
   * Forwards a client's CancelRequest to the backend its key stands for, on that backend's server
   * (`fallback` when the key names none); an unknown key is ignored, as PostgreSQL does.
   * Returns whether the key was known.
   */
  async forward(processId: number, secretKey: Buffer, fallback: UpstreamTarget): Promise<boolean> {
    const target = this.find(processId, secretKey);
    if (!target) return false;
    if (target.forward) {
      await target.forward().catch(() => undefined);
      return true;
    }
    await sendCancel(target.upstream ?? fallback, target.processId, target.secretKey).catch(
      () => undefined,
    );
    return true;
  }

  revoke(processId: number, secretKey: number): void {
    this.keys.delete(keyOf(processId, secretKey));
  }
}

function keyOf(processId: number, secretKey: number): string {
  return `${String(processId)}:${String(secretKey)}`;
}
