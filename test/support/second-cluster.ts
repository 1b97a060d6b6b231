// A local cluster of a test's own, beside the run's shared server (never that server, whatever
// PGVPD_TEST_SERVER says): system binaries when installed, else embedded. Stopped at the test's
// teardown, and by an exit handler if the process dies first.
import { rmSync } from 'node:fs';
import type { TestLike } from './postgres.js';
import {
  privateRunDir,
  startServer,
  stopLocalSync,
  stopServer,
  systemBinDir,
  type ServerState,
} from './server.js';

/** `preload`: its shared_preload_libraries (system binaries only; default none). */
export async function secondCluster(t: TestLike, preload = ''): Promise<ServerState> {
  const runDir = privateRunDir();
  const saved = { server: process.env.PGVPD_TEST_SERVER, preload: process.env.PGVPD_TEST_PRELOAD };
  process.env.PGVPD_TEST_SERVER = systemBinDir() === undefined ? 'embedded' : 'system';
  process.env.PGVPD_TEST_PRELOAD = preload;
  let state: ServerState;
  try {
    state = await startServer(runDir, process.pid);
  } catch (error) {
    rmSync(runDir, { recursive: true, force: true });
    throw error;
  } finally {
    restore('PGVPD_TEST_SERVER', saved.server);
    restore('PGVPD_TEST_PRELOAD', saved.preload);
  }
  const onExit = (): void => {
    stopLocalSync(state);
    rmSync(runDir, { recursive: true, force: true });
  };
  process.once('exit', onExit);
  t.teardown(async () => {
    process.off('exit', onExit);
    await stopServer(runDir);
  });
  return state;
}

function restore(name: string, value: string | undefined): void {
  if (value === undefined) Reflect.deleteProperty(process.env, name);
  else process.env[name] = value;
}
