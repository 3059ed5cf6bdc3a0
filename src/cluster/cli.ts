import { startLocalCluster } from './local.js';

/**
 * `npm run cluster -- --nodes 3 [--api-key KEY] [--log-level debug] [--srtp]`: PostgreSQL, HAProxy, Kamailio and
 * N nodes on this machine's loopback (src/cluster/local.ts), until Ctrl-C or SIGTERM stops them all. `--srtp` also
 * starts rtpengine, so callers that offer SRTP (SDES) are answered in SRTP while the nodes get plain RTP.
 */
function flag(name: string): string | undefined {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1] : undefined;
}

async function main(): Promise<void> {
  const nodes = Number(flag('nodes') ?? '3');
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 32) throw new Error(`--nodes must be 1..32, got ${flag('nodes')}`);
  console.log(`starting PostgreSQL, ${nodes} nodes, HAProxy and Kamailio (models load on each node first)…`);
  const srtp = process.argv.includes('--srtp');
  const cluster = await startLocalCluster({ nodes, apiKey: flag('api-key') ?? process.env.VOICE_AGENT_API_KEY, logLevel: flag('log-level'), srtp });
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${signal}: stopping the nodes, the proxies and PostgreSQL…`);
    cluster.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(err);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  const lines = [
    '',
    `front door (HAProxy):  ${cluster.httpUrl ?? '(haproxy not installed)'}`,
    ...(cluster.httpUrl ? [`  device WebSocket:     ${cluster.httpUrl.replace('http', 'ws')}/v1/ws`, `  realtime API:         ${cluster.httpUrl.replace('http', 'ws')}/v1/realtime`] : []),
    ...(cluster.httpsUrl ? [`  over TLS:             ${cluster.httpsUrl.replace('https', 'wss')}/v1/ws  (trust ${cluster.caFile}, e.g. NODE_EXTRA_CA_CERTS=${cluster.caFile})`] : []),
    `SIP (Kamailio):        ${cluster.sipUri ?? '(kamailio not installed)'}`,
    ...(cluster.sipTlsUri ? [`  over TLS:             ${cluster.sipTlsUri.replace(/^sip:/, 'sip:agent@')}  (trust ${cluster.caFile})`] : []),
    ...(cluster.srtp ? ['  SRTP (SDES):          callers offering RTP/SAVP are answered in SRTP by rtpengine; the nodes get plain RTP'] : []),
    `API key:               ${cluster.apiKey}`,
    `database:              ${cluster.databaseUrl}`,
    ...cluster.nodes.map((n) => `${n.name}:                 ${n.httpUrl}  sip:${n.address}:${n.sipPort}  log ${n.logFile}`),
    '',
    'Ctrl-C stops everything.',
  ];
  console.log(lines.join('\n'));
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
