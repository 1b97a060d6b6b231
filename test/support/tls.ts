// A throwaway certificate authority and a `localhost` server certificate for TLS tests, made with
// the openssl command line tool.
//
// The certificates of a run live in `<run directory>/tls` (see server.ts): the `before` script
// makes them whatever server kind the run uses, and the system and embedded servers run with them
// (`ssl = on`). Test files reach them through `testCertificates()` in postgres.ts, or through
// `serverInfo().tls` when they need the CA the shared server's certificate is signed by.
//
// Creation is atomic: the files are written into a private directory that is then renamed into
// place, so test processes running in parallel never see a half-written set, and whoever renames
// second simply uses the first set.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';

/** Paths of the test certificates. Every file is PEM. */
export interface TestCertificatePaths {
  /** Directory holding the files below (mode 0755). */
  dir: string;
  /** Self-signed CA certificate (0644): what a verifying client trusts. */
  caCert: string;
  /** CA private key (0600), to sign further certificates if a test needs one. */
  caKey: string;
  /** Server certificate for CN=localhost, SAN DNS:localhost and IP:127.0.0.1, signed by the CA (0644). */
  serverCert: string;
  /** Unencrypted private key of the server certificate (0600, owned by whoever created the set). */
  serverKey: string;
}

/** The paths plus the PEM text of the files a TLS client or server is given. */
export interface TestCertificates extends TestCertificatePaths {
  caCertPem: string;
  serverCertPem: string;
  serverKeyPem: string;
}

/** Names the server certificate is valid for. */
export const serverCertificateNames = { dns: 'localhost', ip: '127.0.0.1' } as const;

const files = {
  caCert: 'ca.crt',
  caKey: 'ca.key',
  serverCert: 'server.crt',
  serverKey: 'server.key',
} as const;

const openssl = process.env.PGVPD_TEST_OPENSSL ?? 'openssl';

function runOpenssl(args: string[], cwd: string): void {
  try {
    execFileSync(openssl, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`openssl ${args.join(' ')} failed: ${stderr || String(error)}`, {
      cause: error,
    });
  }
}

function generate(dir: string): void {
  const ec = ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'];
  runOpenssl(['genpkey', ...ec, '-out', files.caKey], dir);
  runOpenssl(
    [
      'req',
      '-x509',
      '-new',
      '-key',
      files.caKey,
      '-sha256',
      '-days',
      '3650',
      '-subj',
      '/CN=pgvpd test CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-addext',
      'subjectKeyIdentifier=hash',
      '-out',
      files.caCert,
    ],
    dir,
  );
  runOpenssl(['genpkey', ...ec, '-out', files.serverKey], dir);
  runOpenssl(
    ['req', '-new', '-key', files.serverKey, '-subj', '/CN=localhost', '-out', 'server.csr'],
    dir,
  );
  writeFileSync(
    join(dir, 'server.ext'),
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      `subjectAltName=DNS:${serverCertificateNames.dns},IP:${serverCertificateNames.ip}`,
      'subjectKeyIdentifier=hash',
      'authorityKeyIdentifier=keyid,issuer',
      '',
    ].join('\n'),
  );
  runOpenssl(
    [
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      files.caCert,
      '-CAkey',
      files.caKey,
      '-set_serial',
      `0x${randomBytes(8).toString('hex')}`,
      '-sha256',
      '-days',
      '3650',
      '-extfile',
      'server.ext',
      '-out',
      files.serverCert,
    ],
    dir,
  );
  rmSync(join(dir, 'server.csr'));
  rmSync(join(dir, 'server.ext'));
  chmodSync(join(dir, files.caKey), 0o600);
  chmodSync(join(dir, files.serverKey), 0o600);
  chmodSync(join(dir, files.caCert), 0o644);
  chmodSync(join(dir, files.serverCert), 0o644);
  chmodSync(dir, 0o755);
}

function paths(dir: string): TestCertificatePaths {
  return {
    dir,
    caCert: join(dir, files.caCert),
    caKey: join(dir, files.caKey),
    serverCert: join(dir, files.serverCert),
    serverKey: join(dir, files.serverKey),
  };
}

/**
 * Returns the certificates in `dir`, creating them first if `dir` does not exist yet. Synchronous
 * and safe to call from several processes at once.
 */
export function ensureTestCertificates(dir: string): TestCertificates {
  if (!existsSync(dir)) {
    mkdirSync(dirname(dir), { recursive: true });
    const staging = `${dir}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    mkdirSync(staging);
    try {
      generate(staging);
      try {
        renameSync(staging, dir);
      } catch (error) {
        // Another process renamed its set into place first: use that one.
        const code = (error as NodeJS.ErrnoException).code;
        if (!existsSync(dir) || (code !== 'ENOTEMPTY' && code !== 'EEXIST')) throw error;
      }
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  }
  const found = paths(dir);
  return {
    ...found,
    caCertPem: readFileSync(found.caCert, 'utf8'),
    serverCertPem: readFileSync(found.serverCert, 'utf8'),
    serverKeyPem: readFileSync(found.serverKey, 'utf8'),
  };
}
