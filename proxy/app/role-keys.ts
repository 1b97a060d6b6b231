// SCRAM pass-through keys of pooled app mode, per pool key (server, database, role): the newest
// ClientKey a client's proof revealed, with the verifier that proof was checked against. The
// pool's logins of that key answer PostgreSQL's challenge with them (upstream/login.ts), so the
// proxy stores no password. Each authenticated client replaces what is held (after an ALTER ROLE
// … PASSWORD the next client brings keys of the new verifier); a login that finds them stale
// (the server's salt is not the verifier's) drops them. Held in memory only, never logged.
import type { ScramKeys } from '../auth/scram-client.js';
import { poolKeyId, type PoolKey } from '../upstream/login.js';

export class RoleKeys {
  private readonly keys = new Map<string, ScramKeys>();

  /** An authenticated client's keys: from now on the key's logins use them. */
  remember(key: PoolKey, keys: ScramKeys): void {
    this.keys.set(poolKeyId(key), keys);
  }

  get(key: PoolKey): ScramKeys | undefined {
    return this.keys.get(poolKeyId(key));
  }

  /** Stale keys are dropped, unless a client has brought newer ones meanwhile. */
  forget(key: PoolKey, keys: ScramKeys): void {
    const id = poolKeyId(key);
    if (this.keys.get(id) === keys) this.keys.delete(id);
  }

  /** The role may no longer be served (the lookup gave no verifier): nothing is kept for it. */
  drop(key: PoolKey): void {
    this.keys.delete(poolKeyId(key));
  }

  /**
   * Why a pooled session of `key`, logged in with `used`, may no longer serve: the keys held now
   * come from another verifier (the role's password changed, or the name now belongs to another
   * role), or none are held (the role may no longer be served). Undefined when it may.
   */
  outdated(key: PoolKey, used: ScramKeys | undefined): string | undefined {
    if (used === undefined) return undefined;
    const held = this.keys.get(poolKeyId(key));
    if (held === undefined) return 'its role may no longer be served';
    if (held === used) return undefined;
    return held.verifier.storedKey.equals(used.verifier.storedKey)
      ? undefined
      : "its role's verifier changed";
  }
}
