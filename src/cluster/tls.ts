import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * A throwaway certificate authority and one server certificate for the one-machine cluster, made with the
 * `openssl` command: HAProxy terminates the device WebSocket's TLS with it and PostgreSQL serves TLS with it, and
 * the nodes (and the tests) trust only this CA. The server certificate names every loopback address the cluster
 * uses (127.0.0.1–33) and localhost, so clients can verify the host as production clients do (verify-full).
 */
export interface LocalPki {
  /** The CA certificate (PEM) clients trust. */
  ca: string;
  /** The server certificate and its key (PEM files). */
  cert: string;
  key: string;
  /** Certificate followed by key in one file: what HAProxy's `crt` takes. */
  bundle: string;
}

export const OPENSSL = ['/usr/bin/openssl', '/usr/local/bin/openssl'].find((p) => existsSync(p)) ?? null;

function openssl(args: string[]): void {
  const run = spawnSync(OPENSSL!, args, { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`openssl ${args[0]} failed: ${run.stderr || run.error?.message}`);
}

/** Make the CA and server certificate in `dir` (EC P-256, one day: they live as long as the cluster). */
export function makeLocalPki(dir: string, addresses: number = 33): LocalPki {
  if (!OPENSSL) throw new Error('openssl not found (apt-get install openssl)');
  const file = (name: string) => path.join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '1', '-subj', '/CN=voice-agent throwaway cluster CA']);
  const san = ['DNS:localhost', ...Array.from({ length: addresses }, (_, i) => `IP:127.0.0.${i + 1}`)].join(',');
  writeFileSync(file('server.ext'), `subjectAltName=${san}\nextendedKeyUsage=serverAuth\n`);
  openssl(['req', ...ec, '-keyout', file('server.key'), '-out', file('server.csr'), '-subj', '/CN=localhost']);
  openssl(['x509', '-req', '-in', file('server.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', file('server.ext'), '-out', file('server.pem')]);
  writeFileSync(file('server.bundle.pem'), readFileSync(file('server.pem'), 'utf8') + readFileSync(file('server.key'), 'utf8'), { mode: 0o600 });
  return { ca: file('ca.pem'), cert: file('server.pem'), key: file('server.key'), bundle: file('server.bundle.pem') };
}
