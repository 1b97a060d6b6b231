// The process's own metrics under the names standard dashboards use (process_* and nodejs_*, as
// prom-client's defaults name them), read only when /metrics is scraped.
//
// Why not prom-client's collectDefaultMetrics: it keeps a garbage-collection observer (a callback
// for every GC) and an event-loop-delay timer (every 10 ms) running for the life of the process.
// The pipe allocates a buffer per chunk, so GCs are frequent, and bench/admin.mjs measured the
// admin-enabled proxy lower with them than without (docs/benchmarks.md). Here nothing runs
// between scrapes.
//
// Guarantees: no timer, observer or listener is installed; each value is read in collect().
// The event-loop lag is one setImmediate measured at scrape time, as prom-client's own gauge does.
import { readdirSync } from 'node:fs';
import { Counter, Gauge, type Registry } from 'prom-client';

/** Registers the process metrics in `registry`. */
export function registerProcessMetrics(registry: Registry): void {
  const registers = [registry];
  // From zero: the counters are the CPU time since the process started.
  let last: NodeJS.CpuUsage = { user: 0, system: 0 };
  const user = new Counter({
    name: 'process_cpu_user_seconds_total',
    help: 'User CPU time spent in seconds.',
    registers,
  });
  const system = new Counter({
    name: 'process_cpu_system_seconds_total',
    help: 'System CPU time spent in seconds.',
    registers,
  });
  // Registered after the two above, so that one collect() updates all three before rendering.
  new Counter({
    name: 'process_cpu_seconds_total',
    help: 'Total user and system CPU time spent in seconds.',
    registers,
    collect() {
      const now = process.cpuUsage();
      const userSeconds = (now.user - last.user) / 1e6;
      const systemSeconds = (now.system - last.system) / 1e6;
      last = now;
      user.inc(userSeconds);
      system.inc(systemSeconds);
      this.inc(userSeconds + systemSeconds);
    },
  });
  new Gauge({
    name: 'process_start_time_seconds',
    help: 'Start time of the process since unix epoch in seconds.',
    registers,
    collect() {
      this.set(Math.round(Date.now() / 1000 - process.uptime()));
    },
  });
  new Gauge({
    name: 'process_resident_memory_bytes',
    help: 'Resident memory size in bytes.',
    registers,
    collect() {
      this.set(process.memoryUsage.rss());
    },
  });
  new Gauge({
    name: 'process_open_fds',
    help: 'Number of open file descriptors.',
    registers,
    collect() {
      try {
        this.set(readdirSync('/proc/self/fd').length - 1);
      } catch {
        // Not Linux: the gauge keeps its last value (0).
      }
    },
  });
  const heap = (name: string, help: string, pick: (m: NodeJS.MemoryUsage) => number): void => {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(pick(process.memoryUsage()));
      },
    });
  };
  heap(
    'nodejs_heap_size_total_bytes',
    'Process heap size from Node.js in bytes.',
    (m) => m.heapTotal,
  );
  heap(
    'nodejs_heap_size_used_bytes',
    'Process heap size used from Node.js in bytes.',
    (m) => m.heapUsed,
  );
  heap('nodejs_external_memory_bytes', 'Node.js external memory size in bytes.', (m) => m.external);
  new Gauge({
    name: 'nodejs_eventloop_lag_seconds',
    help: 'Lag of event loop in seconds.',
    registers,
    async collect() {
      const started = process.hrtime.bigint();
      await new Promise<void>((resolve) => setImmediate(resolve));
      this.set(Number(process.hrtime.bigint() - started) / 1e9);
    },
  });
  new Gauge({
    name: 'nodejs_version_info',
    help: 'Node.js version info.',
    labelNames: ['version'],
    registers,
    collect() {
      this.set({ version: process.version }, 1);
    },
  });
}
