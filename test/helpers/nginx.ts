/** Debian's nginx run unprivileged on loopback by a test: everything it writes stays in the test's own directory. */
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';

/** Debian's nginx binary, when installed (scripts/setup.sh --test installs it). */
export const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p));

/**
 * Writes `dir/nginx.conf`: the distribution's main config reduced to what an unprivileged process may use (pid,
 * error log and temp paths in `dir`), with `http` inside its `http {}` block. Returns nginx's arguments for it.
 */
export async function writeNginxConfig(dir: string, http: string): Promise<string[]> {
  const conf = `
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
worker_processes 1;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${http}
}
`;
  const file = path.join(dir, 'nginx.conf');
  await writeFile(file, conf);
  return ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', file, '-g', 'daemon off;'];
}
