// Slows down password guessing in org mode, where the proxy checks passwords itself (issue 11,
// finding 8). Three tallies of failed logins, each forgotten after a quiet minute:
//
//   (address, user)  the guesses one client makes at one account      free 3
//   user             guesses at one account from any address           free 10
//   address          one client trying passwords on many accounts      free 10
//
// A user is an org's user (org id and name), known to the catalog or not; an address is the
// client's IPv4 address, or the /64 of an IPv6 one (one host holds a whole /64). Past its free
// failures a tally asks for a delay that doubles from 250 ms up to 5 s; an attempt's delay is the
// largest its three tallies ask for.
//
// The delay holds back the answer, whichever it is: a right password on a throttled account
// waits exactly as long as a wrong one would have, so a guesser cannot read a success from its
// speed and hang up on the slow answers. And the held-back answers to one address are given one
// at a time: each waits for the one before it, then its own delay, so that parallel connections
// gain a guesser nothing over sequential ones. An answer the client stopped waiting for leaves
// the queue without holding up the next. UnauthenticatedConnections caps how many connections
// of one address may be logging in at once, which bounds that queue.
//
// Forgiving: a success forgives its own (address, user) tally and takes that tally's failures off
// the address's and the user's tallies; never another user's failures, nor the user's failures
// from other addresses. So logging into one's own account does not clear the throttle on
// guesses at someone else's, from that address or any other.
//
// No lock-out: a victim of guessing from other addresses waits at most 5 s more per login (the
// per-user delay is never queued across addresses); a correct password always gets in. Only
// clients behind the guesser's own address share its queue (and its cap).
import { isIPv4, isIPv6 } from 'node:net';

export interface ThrottleOptions {
  /** Failures of one (address, user) answered at once. */
  free: number;
  /** Failures at one user, from any address, answered at once. */
  freePerUser: number;
  /** Failures from one address, at any user, answered at once. */
  freePerAddress: number;
  /** Delay asked by a tally's first failure past its free ones, in ms; doubles with each. */
  baseMs: number;
  maxMs: number;
  /** A tally without a failure for this long is forgotten. */
  forgetMs: number;
  /** At most this many tallies of each kind are kept; the least recently failed go first. */
  maxEntries: number;
}

const defaultOptions: ThrottleOptions = {
  free: 3,
  freePerUser: 10,
  freePerAddress: 10,
  baseMs: 250,
  maxMs: 5000,
  forgetMs: 60_000,
  maxEntries: 100_000,
};

/** How long the answer to one attempt is held back. */
export interface HeldAnswer {
  /** Until the answer, in ms from the verdict, as scheduled then (0: at once). */
  delayMs: number;
  /** This attempt's own delay, without the wait for the answers queued before it. */
  stepMs: number;
  /** When the answer is scheduled (ms since the epoch, on the verdict's clock). */
  atMs: number;
  /** Resolves when the answer may go; undefined when it may go at once. */
  ready: Promise<void> | undefined;
  /** The client left: the attempt leaves the queue (idempotent). */
  cancel(): void;
}

interface Tally {
  count: number;
  last: number;
}

interface Waiter {
  arrived: number;
  step: number;
  /** Scheduled answer time (ms since the epoch). */
  at: number;
  resolve(): void;
}

interface Queue {
  waiters: Waiter[];
  /** When the last answer of this address went. */
  lastAt: number;
  timer: NodeJS.Timeout | undefined;
}

const answerAtOnce: HeldAnswer = {
  delayMs: 0,
  stepMs: 0,
  atMs: 0,
  ready: undefined,
  cancel: () => undefined,
};

export class AuthThrottle {
  private readonly pairs = new Map<string, Tally>();
  private readonly users = new Map<string, Tally>();
  private readonly addresses = new Map<string, Tally>();
  private readonly queues = new Map<string, Queue>();
  private readonly options: ThrottleOptions;

  constructor(options: Partial<ThrottleOptions> = {}) {
    this.options = { ...defaultOptions, ...options };
  }

  /**
   * The verdict on one login attempt of `user` (any stable key, e.g. org id and username) from
   * `address`: records a failure, or forgives the (address, user) tally after a success, and
   * says how long to hold the answer back. The delay is the same for both verdicts.
   */
  settle(address: string, user: string, ok: boolean, now = Date.now()): HeldAnswer {
    this.sweep(now);
    const host = addressKey(address);
    const pairKey = `${host}\0${user}`;
    const o = this.options;
    const step = Math.max(
      this.delay((this.pairs.get(pairKey)?.count ?? 0) + 1 - o.free),
      this.delay((this.users.get(user)?.count ?? 0) + 1 - o.freePerUser),
      this.delay((this.addresses.get(host)?.count ?? 0) + 1 - o.freePerAddress),
    );
    if (ok) this.forgive(pairKey, host, user);
    else {
      this.count(this.pairs, pairKey, now);
      this.count(this.users, user, now);
      this.count(this.addresses, host, now);
    }
    return step === 0 ? { ...answerAtOnce, atMs: now } : this.enqueue(host, step, now);
  }

  /** Whether a failure from the address is still remembered. */
  recentlyFailed(address: string, now = Date.now()): boolean {
    const tally = this.addresses.get(addressKey(address));
    return tally !== undefined && now - tally.last <= this.options.forgetMs;
  }

  /** Answers held back for the address now (for tests and metrics). */
  queued(address: string): number {
    return this.queues.get(addressKey(address))?.waiters.length ?? 0;
  }

  private delay(over: number): number {
    if (over <= 0) return 0;
    return Math.min(this.options.maxMs, this.options.baseMs * 2 ** Math.min(over - 1, 30));
  }

  private count(tallies: Map<string, Tally>, key: string, now: number): void {
    const tally = tallies.get(key) ?? { count: 0, last: now };
    tally.count += 1;
    tally.last = now;
    // Re-inserted, so that each map stays in order of the last failure (sweep relies on it).
    tallies.delete(key);
    tallies.set(key, tally);
    if (tallies.size > this.options.maxEntries) {
      const oldest = tallies.keys().next();
      if (!oldest.done) tallies.delete(oldest.value);
    }
  }

  private forgive(pairKey: string, host: string, user: string): void {
    const pair = this.pairs.get(pairKey);
    if (!pair) return;
    this.pairs.delete(pairKey);
    for (const [tallies, key] of [
      [this.users, user],
      [this.addresses, host],
    ] as const) {
      const tally = tallies.get(key);
      if (!tally) continue;
      // Its `last` stays: the map's order is that of the last failure.
      tally.count -= pair.count;
      if (tally.count <= 0) tallies.delete(key);
    }
  }

  private sweep(now: number): void {
    for (const tallies of [this.pairs, this.users, this.addresses]) {
      for (const [key, tally] of tallies) {
        if (now - tally.last <= this.options.forgetMs) break;
        tallies.delete(key);
      }
    }
  }

  private enqueue(host: string, step: number, now: number): HeldAnswer {
    let queue = this.queues.get(host);
    if (!queue) {
      queue = { waiters: [], lastAt: 0, timer: undefined };
      this.queues.set(host, queue);
    }
    const previous = queue.waiters.at(-1)?.at ?? queue.lastAt;
    const waiter: Waiter = {
      arrived: now,
      step,
      at: Math.max(now, previous) + step,
      resolve: () => undefined,
    };
    const ready = new Promise<void>((resolve) => (waiter.resolve = resolve));
    queue.waiters.push(waiter);
    if (queue.waiters.length === 1) this.arm(host, queue);
    const q = queue;
    return {
      delayMs: waiter.at - now,
      stepMs: step,
      atMs: waiter.at,
      ready,
      cancel: () => {
        const index = q.waiters.indexOf(waiter);
        if (index < 0) return;
        q.waiters.splice(index, 1);
        // The ones behind it move up: each still waits its own delay after the one before it.
        let before = q.lastAt;
        for (const w of q.waiters) {
          w.at = Math.max(w.arrived, before) + w.step;
          before = w.at;
        }
        this.arm(host, q);
      },
    };
  }

  /** Sets the timer of the queue's first waiter, or drops the queue when it is empty. */
  private arm(host: string, queue: Queue): void {
    clearTimeout(queue.timer);
    queue.timer = undefined;
    const head = queue.waiters[0];
    if (!head) {
      if (this.queues.get(host) === queue) this.queues.delete(host);
      return;
    }
    queue.timer = setTimeout(
      () => {
        queue.waiters.shift();
        queue.lastAt = head.at;
        head.resolve();
        this.arm(host, queue);
      },
      Math.max(0, head.at - Date.now()),
    );
  }
}

/**
 * Caps the connections of one address that have not yet authenticated, counted from accept until
 * authentication ends (a success, or the connection's end). Addresses as in AuthThrottle.
 */
export class UnauthenticatedConnections {
  private readonly counts = new Map<string, number>();

  constructor(readonly max: number) {}

  /**
   * A place for a new connection from `address`: a function that gives it up (once, however
   * often it is called), or undefined when the address already has `max`.
   */
  enter(address: string): (() => void) | undefined {
    const key = addressKey(address);
    const count = this.counts.get(key) ?? 0;
    if (count >= this.max) return undefined;
    this.counts.set(key, count + 1);
    let left = false;
    return () => {
      if (left) return;
      left = true;
      const now = (this.counts.get(key) ?? 1) - 1;
      if (now <= 0) this.counts.delete(key);
      else this.counts.set(key, now);
    };
  }

  count(address: string): number {
    return this.counts.get(addressKey(address)) ?? 0;
  }
}

/**
 * The throttle's unit of address: an IPv4 address (also when IPv4-mapped), or the first 64 bits
 * of an IPv6 one, since a single host commonly holds a whole /64.
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1] !== undefined) return mapped[1];
  if (isIPv4(address) || !isIPv6(address)) return address;
  const [head = '', tail = ''] = (address.split('%')[0] ?? '').split('::');
  const left = head === '' ? [] : head.split(':');
  const right = address.includes('::') ? (tail === '' ? [] : tail.split(':')) : [];
  // An embedded IPv4 tail (a:b::1.2.3.4) takes two groups; only the first four groups matter.
  const groups = [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0')];
  return `${groups
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}
