// tap `after` script: stops the shared PostgreSQL and removes the run directory.
import { sharedRunDir, stopServer } from './server.js';

await stopServer(sharedRunDir());
