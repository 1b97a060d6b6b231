#!/usr/bin/env node
// `npm test`: runs tap with its usual console report, keeps the raw TAP of the whole run in a
// file, and ends with the line `N passed, N failed` counted from that TAP.
//
// What is counted is assertions, as tap-parser's root parser reports them: every leaf test point
// of every file and subtest. A subtest's closing point is not counted again, except when it
// disagrees with its own assertions (a file that crashed or timed out after passing ones), in
// which case it counts as one failure. Arguments go to tap: `npm test -- test/harness.test.ts`.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Parser } from 'tap-parser';

const require = createRequire(import.meta.url);
const tapBin = join(require.resolve('tap/package.json'), '..', 'dist', 'esm', 'run.mjs');

const work = mkdtempSync(join(tmpdir(), 'pgvpd-tap-output-'));
const tapOutput = join(work, 'run.tap');
// Run directory of the shared PostgreSQL (see test/support/server.ts); `after` removes it.
const runDir = join(tmpdir(), `pgvpd-test-run-${process.pid}`);

// On a terminal tap's interactive reporter shows progress and the raw TAP goes to a file; in a
// log (CI) tap prints raw TAP, which is both shown and kept here.
const interactive = process.stdout.isTTY === true;
const tapArgs = interactive
  ? [tapBin, `--output-file=${tapOutput}`, ...process.argv.slice(2)]
  : [tapBin, '--reporter=tap', ...process.argv.slice(2)];
let piped = '';

const status = await new Promise((resolve) => {
  const child = spawn(process.execPath, tapArgs, {
    stdio: ['inherit', interactive ? 'inherit' : 'pipe', 'inherit'],
    env: { ...process.env, PGVPD_TEST_RUN_DIR: runDir },
  });
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk) => {
    piped += chunk;
    process.stdout.write(chunk);
  });
  child.on('close', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
});

stopLeftoverServer(runDir);

let tap = piped;
if (interactive) {
  try {
    tap = readFileSync(tapOutput, 'utf8');
  } catch {
    // tap wrote nothing; the checks below turn that into a failure
  }
}
rmSync(work, { recursive: true, force: true });

const counts = { pass: 0, fail: 0, skip: 0, todo: 0 };
const parser = new Parser();
for (const kind of Object.keys(counts)) parser.on(kind, () => (counts[kind] += 1));
parser.end(tap);

let { pass: passed, fail: failed } = counts;
if (counts.skip + counts.todo > 0) console.log(`# ${counts.skip} skipped, ${counts.todo} todo`);
if (status !== 0 && failed === 0) {
  console.error(
    `tap exited with status ${status} without a failed assertion; counting one failure`,
  );
  failed += 1;
}
if (passed + failed === 0) {
  console.error('no assertion ran; counting one failure');
  failed += 1;
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed > 0 ? 1 : 0;

/**
 * The `after` script normally stops the server; if tap died before running it, stop a local
 * cluster here so that no postmaster outlives the run.
 */
function stopLeftoverServer(dir) {
  const stateFile = join(dir, 'state.json');
  if (!existsSync(stateFile)) return;
  try {
    const state = JSON.parse(readFileSync(stateFile, 'utf8'));
    if (state.binDir && state.dataDir && existsSync(join(state.dataDir, 'postmaster.pid'))) {
      const pgCtl = join(state.binDir, 'pg_ctl');
      const args = ['-D', state.dataDir, '-m', 'fast', '-w', 'stop'];
      const asRoot = process.getuid?.() === 0;
      if (asRoot) {
        spawnSync(
          'setpriv',
          ['--reuid=postgres', '--regid=postgres', '--init-groups', pgCtl, ...args],
          {
            stdio: 'ignore',
          },
        );
      } else spawnSync(pgCtl, args, { stdio: 'ignore' });
    }
  } catch (error) {
    console.error('pgvpd test harness: could not stop the leftover server:', error);
  }
  rmSync(dir, { recursive: true, force: true });
}
