/**
 * A mock of an operator's own systems on 127.0.0.1: a real HTTP server that checks every request's signature
 * (src/integration/signing.ts, as a receiver would), honours Idempotency-Key (a repeated key gets the first
 * answer and books nothing), and can be told to be slow or down.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ConfigOverrides } from '../../src/config.js';
import { verifySignature } from '../../src/integration/signing.js';
import { startTestServer, type TestServer } from './server.js';

export interface ReceivedRequest {
  method: string;
  path: string;
  /** The query string, with its `?` (empty when none). */
  query: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  json: unknown;
  /** The signature checked out (timestamp inside the replay window). */
  signed: boolean;
  at: number;
  /** What it was answered: an HTTP status, or 0 for a dropped connection (or none yet). */
  status: number;
}

export interface OperatorService {
  url: string;
  requests: ReceivedRequest[];
  /** Bookings actually made (one per idempotency key). */
  bookings: { key: string; reference: string; body: unknown }[];
  /** Answer the next N requests after this delay (ms); the booking is made on receipt, as a slow backend would. */
  slow(ms: number, times?: number): void;
  /** Refuse (503) or drop connections for the next N requests. */
  down(times: number, how?: '503' | 'reset'): void;
  close(): Promise<void>;
}

export async function startOperatorService(secret: string): Promise<OperatorService> {
  const requests: ReceivedRequest[] = [];
  const bookings: OperatorService['bookings'] = [];
  const answers = new Map<string, { status: number; body: string }>();
  let slowMs = 0;
  let slowTimes = 0;
  let downTimes = 0;
  let downHow: '503' | 'reset' = '503';
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const url = new URL(req.url ?? '/', 'http://x');
      const signedText = req.method === 'GET' || req.method === 'DELETE' ? `${url.pathname}${url.search}` : body;
      const verdict = verifySignature({
        secret,
        body: signedText,
        timestamp: req.headers['x-agent-timestamp'] as string | undefined,
        signature: req.headers['x-agent-signature'] as string | undefined,
      });
      let json: unknown;
      try {
        json = body ? JSON.parse(body) : undefined;
      } catch {
        json = undefined;
      }
      const record: ReceivedRequest = { method: req.method ?? '', path: url.pathname, query: url.search, headers: req.headers, body, json, signed: verdict.ok, at: Date.now(), status: 0 };
      requests.push(record);
      if (downTimes > 0) {
        downTimes--;
        if (downHow === 'reset') {
          req.socket.destroy();
          return;
        }
        record.status = 503;
        res.writeHead(503).end();
        return;
      }
      if (!verdict.ok) {
        record.status = 401;
        res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ error: verdict.reason }));
        return;
      }
      if (url.pathname === '/redirect') {
        record.status = 302;
        res.writeHead(302, { location: '/bookings' }).end();
        return;
      }
      if (url.pathname === '/huge') {
        record.status = 200;
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, blob: 'x'.repeat(300_000) }));
        return;
      }
      const key = req.headers['idempotency-key'] as string | undefined;
      let answer = key ? answers.get(key) : undefined;
      if (!answer) {
        if (url.pathname === '/bookings') {
          const reference = `R${1000 + bookings.length + 1}`;
          bookings.push({ key: key ?? '', reference, body: json });
          answer = { status: 201, body: JSON.stringify({ ok: true, booking: { reference, party_size: (json as Record<string, unknown> | undefined)?.party_size } }) };
        } else {
          answer = { status: 200, body: JSON.stringify({ ok: true }) };
        }
        if (key) answers.set(key, answer);
      }
      const send = (a: { status: number; body: string }): void => {
        if (res.destroyed) return;
        record.status = a.status;
        res.writeHead(a.status, { 'content-type': 'application/json' }).end(a.body);
      };
      if (slowTimes > 0) {
        slowTimes--;
        const a = answer;
        setTimeout(() => send(a), slowMs);
      } else send(answer);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    bookings,
    slow(ms, times = 1) {
      slowMs = ms;
      slowTimes = times;
    },
    down(times, how = '503') {
      downTimes = times;
      downHow = how;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * The restaurant agent (config/agent-rules.json) with its booking form sent to the operator's booking service
 * instead of the built-in in-memory tool: writes it to `file` and returns the path.
 */
export async function restaurantAgentWithHttpBooking(
  file: string,
  serviceUrl: string,
  options: { timeoutMs?: number; secretEnv: string; edit?: (rules: Record<string, unknown> & { intents: Record<string, unknown>[] }) => void },
): Promise<string> {
  const { readFile, writeFile } = await import('node:fs/promises');
  const rules = JSON.parse(await readFile(new URL('../../config/agent-rules.json', import.meta.url), 'utf8')) as Record<string, unknown> & {
    intents: Record<string, unknown>[];
    languages: string[];
  };
  rules.toolDefaults = { secretEnv: options.secretEnv, timeoutMs: options.timeoutMs ?? 3000 };
  rules.tools = [
    {
      name: 'book_table',
      description: 'Book a table in the restaurant\'s own booking system, after the caller confirmed the details.',
      parameters: {
        type: 'object',
        properties: {
          party_size: { type: 'integer', description: 'Number of people.' },
          date: { type: 'string', description: 'Day, ISO "2025-05-01".' },
          time: { type: 'string', description: 'Time, "19:30".' },
          name: { type: 'string', description: 'Name for the booking.' },
        },
        required: ['party_size', 'time'],
      },
      url: `${serviceUrl}/bookings`,
      method: 'POST',
      headers: { 'X-Customer-Id': '{caller.customer_id}' },
      send: { customer_id: '{caller.customer_id}', loyalty_tier: '{caller.tier}' },
      result: { reference: 'booking.reference' },
      confirmation: 'always',
    },
  ];
  const booking = rules.intents.find((i) => i.name === 'book_appointment');
  if (!booking) throw new Error('no book_appointment intent');
  // No arguments: the form's slots are sent as the tool's parameters of the same names.
  booking.tool = { name: 'book_table' };
  booking.reply = Object.fromEntries(rules.languages.map((l) => [l, 'Booked for {party_size}, reference {result.reference}.']));
  booking.error = Object.fromEntries(rules.languages.map((l) => [l, 'The booking system did not answer.']));
  // Short lines: every reply plays in real time before the next turn.
  booking.confirm = Object.fromEntries(rules.languages.map((l) => [l, '{party_size} at {time}, {name}. Book it?']));
  rules.welcome = Object.fromEntries(rules.languages.map((l) => [l, 'Hi.']));
  options.edit?.(rules);
  await writeFile(file, JSON.stringify(rules));
  return file;
}

/** The shared secret the tests' operator service and agent files use, and the env var the agent reads it from. */
export const OPERATOR_SECRET_ENV = 'TEST_OPERATOR_TOOLS_SECRET';
export const OPERATOR_SECRET = 'operator-shared-secret-for-tests';

/**
 * A real server running the restaurant agent whose bookings go to a mock operator service on loopback. Typed turns
 * only: the recogniser compiles no grammar (seconds saved). stop() ends the server and the service, and removes the
 * agent file.
 */
export async function startAgentWithOperator(
  options: {
    toolTimeoutMs?: number;
    overrides?: Omit<ConfigOverrides, 'providers'>;
    /** Changes to the agent file before the server reads it (handover queues, extra intents). */
    agent?: (rules: Record<string, unknown> & { intents: Record<string, unknown>[] }) => void;
  } = {},
): Promise<{ ops: OperatorService; server: TestServer; stop(): Promise<void> }> {
  process.env[OPERATOR_SECRET_ENV] = OPERATOR_SECRET;
  const ops = await startOperatorService(OPERATOR_SECRET);
  const dir = await mkdtemp(path.join(tmpdir(), 'agent-'));
  const stopOps = async (): Promise<void> => {
    await ops.close();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const rulesPath = await restaurantAgentWithHttpBooking(path.join(dir, 'agent.json'), ops.url, {
      secretEnv: OPERATOR_SECRET_ENV,
      ...(options.toolTimeoutMs !== undefined ? { timeoutMs: options.toolTimeoutMs } : {}),
      ...(options.agent ? { edit: options.agent } : {}),
    });
    const server = await startTestServer({
      ...options.overrides,
      providers: { llm: { provider: 'rules', rulesPath }, asr: { provider: 'pocketsphinx', grammar: 'off' } },
    });
    return {
      ops,
      server,
      stop: async () => {
        await server.stop();
        await stopOps();
      },
    };
  } catch (err) {
    await stopOps();
    throw err;
  }
}
