// Slows down password guessing: after a few failed logins from one address, each further failure
// is answered later and later (doubling up to a ceiling). A success, or a quiet minute, forgives.
// The delay is applied before the 28P01 is sent, so a guesser cannot start its next try early.

export interface ThrottleOptions {
  /** Failures answered at once. */
  free: number;
  /** Delay of the first slowed failure, in ms; doubles with each further one. */
  baseMs: number;
  maxMs: number;
  /** A failure older than this is forgotten. */
  forgetMs: number;
}

const defaultOptions: ThrottleOptions = { free: 3, baseMs: 250, maxMs: 5000, forgetMs: 60_000 };

export class AuthThrottle {
  private readonly failures = new Map<string, { count: number; last: number }>();
  private readonly options: ThrottleOptions;

  constructor(options: Partial<ThrottleOptions> = {}) {
    this.options = { ...defaultOptions, ...options };
  }

  /** Records a failure and returns how long to wait before answering it. */
  fail(address: string, now = Date.now()): number {
    this.sweep(now);
    const entry = this.failures.get(address) ?? { count: 0, last: now };
    entry.count += 1;
    entry.last = now;
    this.failures.set(address, entry);
    const over = entry.count - this.options.free;
    if (over <= 0) return 0;
    return Math.min(this.options.maxMs, this.options.baseMs * 2 ** (over - 1));
  }

  /** Whether a failure from the address is still remembered. */
  recentlyFailed(address: string, now = Date.now()): boolean {
    const entry = this.failures.get(address);
    return entry !== undefined && now - entry.last <= this.options.forgetMs;
  }

  succeed(address: string): void {
    this.failures.delete(address);
  }

  private sweep(now: number): void {
    for (const [address, entry] of this.failures) {
      if (now - entry.last > this.options.forgetMs) this.failures.delete(address);
    }
  }
}
