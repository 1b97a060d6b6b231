// tap `before` script: starts the run's shared PostgreSQL once, before any test file.
import { sharedRunDir, startServer, stopServer } from './server.js';

const runDir = sharedRunDir();
try {
  // Our parent is the tap runner: the server belongs to it, and is stale once it is gone.
  const state = await startServer(runDir, process.ppid);
  console.error(
    `# pgvpd test harness: PostgreSQL ${state.version} (${state.kind}) at ${state.host}:${state.port}`,
  );
} catch (error) {
  console.error('pgvpd test harness: could not provide a PostgreSQL server:', error);
  await stopServer(runDir);
  process.exitCode = 1;
}
