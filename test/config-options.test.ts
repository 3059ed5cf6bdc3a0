import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, loadConfig, mergeConfig, type LlmProviderConfig, type ServiceConfig } from '../src/config.js';
import { CONFIG_SCHEMA, configProblems } from '../src/config-schema.js';
import { nearestKey } from '../src/core/validate.js';
import { OpenAiCompatibleLlm } from '../src/providers/llm/openai/index.js';
import { SipServer } from '../src/transports/sip/uas.js';
import type { VoiceService } from '../src/service.js';

/**
 * Providers and transports declare their options beside their code (src/core/options.ts); the config module
 * composes them. One test per defect the review found (issue 11, item 3).
 */
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'config-options-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function rejection(content: unknown): Promise<string> {
  const file = path.join(dir, `c-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(file, JSON.stringify(content));
  try {
    loadConfig(['--config', file], {});
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected the config to be rejected');
}

async function accepted(content: unknown): Promise<ServiceConfig> {
  const file = path.join(dir, `c-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(file, JSON.stringify(content));
  return loadConfig(['--config', file], {});
}

type JsonSchema = { properties?: Record<string, JsonSchema>; oneOf?: JsonSchema[]; additionalProperties?: unknown };

/** Paths of every object in `value` whose keys the schema does not describe (the old `tolerateDefaults` hole). */
function undescribed(value: unknown, schema: JsonSchema, at: string): string[] {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return [];
  if (schema.oneOf) {
    const provider = (value as { provider?: unknown }).provider;
    const branch = schema.oneOf.find((b) => (b.properties?.provider as { const?: unknown } | undefined)?.const === provider);
    return branch ? undescribed(value, branch, at) : [`${at} (provider ${String(provider)})`];
  }
  if (!schema.properties) return schema.additionalProperties === false ? [at] : [];
  return Object.entries(value).flatMap(([key, v]) => {
    const sub = schema.properties?.[key];
    return sub ? undescribed(v, sub, at ? `${at}.${key}` : key) : [at ? `${at}.${key}` : key];
  });
}

describe('options declared beside their code', () => {
  it('refuses a typo in sip with its path and the key meant', async () => {
    const message = await rejection({ sip: { rtpPortMn: 30_000, allowFrom: ['10.0.0.0/8'] } });
    expect(message).toContain('sip.rtpPortMn: is not a known setting (check the spelling): did you mean "rtpPortMin"?');
    // Values are checked too, where the SIP server used to do it by hand at start-up.
    const values = await rejection({ sip: { host: 'localhost', allowFrom: ['10.0.0.0/33'], codecs: ['g729'], transferTarget: 'desk@pbx' } });
    expect(values).toContain('sip.host: must be an IP address');
    expect(values).toContain('sip.allowFrom[0]: must be an IP address or CIDR');
    expect(values).toMatch(/sip\.codecs\[0\]: must be one of "pcmu", "pcma", "opus"/);
    expect(values).toContain('sip.transferTarget: must be a SIP URI');
    // Relations between keys are the section's own check, run once the shapes are right.
    expect(await rejection({ sip: { rtpPortMin: 20_000, rtpPortMax: 20_002 } })).toContain('sip.rtpPortMax: must be at least rtpPortMin + 4');
    const ok = await accepted({ sip: { digest: { realm: 'voice-agent', users: { pbx: 'secret' } }, languageByNumber: { '+34910000000': 'es' } } });
    expect(ok.sip.digest?.users.pbx).toBe('secret');
    expect(ok.sip.rtpPortMin).toBe(10_000);
  });

  it('refuses a typo in telephony with its path and the key meant', async () => {
    const message = await rejection({ telephony: { reorderDeph: 5, twilio: { authTokn: 'x' } } });
    expect(message).toContain('telephony.reorderDeph: is not a known setting (check the spelling): did you mean "reorderDepth"?');
    expect(message).toContain('telephony.twilio.authTokn: is not a known setting (check the spelling): did you mean "authToken"?');
    expect(await rejection({ telephony: { startTimeoutMs: 'soon' } })).toContain('telephony.startTimeoutMs: must be an integer');
    const ok = await accepted({ telephony: { publicUrl: 'wss://voice.example.com', twilio: { authToken: 'tok' } } });
    expect(ok.telephony).toEqual({ publicUrl: 'wss://voice.example.com', twilio: { authToken: 'tok' }, startTimeoutMs: 10_000, reorderDepth: 3 });
  });

  it('describes every key of the defaults: no section passes unchecked', () => {
    expect(undescribed(DEFAULT_CONFIG, CONFIG_SCHEMA as JsonSchema, '')).toEqual([]);
    expect(configProblems(DEFAULT_CONFIG)).toEqual([]);
  });

  it('types and validates what each provider declares (openai extraHeaders and retryBaseDelayMs, llamacpp threads and sequences)', async () => {
    // Typed: these literals compile only because the options are part of the provider's declared type.
    const openai: LlmProviderConfig = { provider: 'openai', baseUrl: 'http://127.0.0.1:9/v1', model: 'm', extraHeaders: { 'x-route': 'eu' }, retryBaseDelayMs: 100 };
    const llamacpp: LlmProviderConfig = { provider: 'llamacpp', modelPath: 'model.gguf', threads: 4, sequences: 2 };
    expect((await accepted({ providers: { llm: openai } })).providers.llm).toEqual(openai);
    expect((await accepted({ providers: { llm: llamacpp } })).providers.llm).toEqual(llamacpp);
    // Validated.
    const bad = await rejection({ providers: { llm: { ...openai, extraHeaders: { 'x-route': 1 }, retryBaseDelayMs: -1 } } });
    expect(bad).toContain('providers.llm.extraHeaders.x-route: must be a string');
    expect(bad).toContain('providers.llm.retryBaseDelayMs: must be >= 0');
    const threads = await rejection({ providers: { llm: { ...llamacpp, threads: 0, sequences: 65, thread: 2 } } });
    expect(threads).toContain('providers.llm.threads: must be >= 1');
    expect(threads).toContain('providers.llm.sequences: must be <= 64');
    expect(threads).toContain('providers.llm.thread: is not a known setting (check the spelling): did you mean "threads"?');
  });

  it('the openai client sends the extraHeaders its declaration accepts', async () => {
    const seen: IncomingHttpHeaders[] = [];
    const server = createServer((req, res) => {
      seen.push(req.headers);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end('data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const { port } = server.address() as AddressInfo;
      const llm = new OpenAiCompatibleLlm({ baseUrl: `http://127.0.0.1:${port}/v1`, model: 'm', extraHeaders: { 'x-route': 'eu' } });
      let text = '';
      for await (const event of llm.stream({ messages: [{ role: 'user', content: 'hello' }], tools: [], language: 'en', signal: new AbortController().signal })) {
        if (event.type === 'text') text += event.text;
      }
      expect(text).toBe('hi');
      expect(seen[0]['x-route']).toBe('eu');
    } finally {
      server.close();
    }
  });

  it('a SIP server built directly refuses a bad section with the same path-named errors', () => {
    const logger = pino({ level: 'silent' });
    const service = {} as VoiceService;
    const config = mergeConfig(DEFAULT_CONFIG.sip, { host: '127.0.0.1', port: 0, maxCalls: 0 });
    expect(() => new SipServer({ service, config, logger })).toThrow(/sip\.maxCalls: must be >= 1/);
    const typo = { ...DEFAULT_CONFIG.sip, ringMS: 10 };
    expect(() => new SipServer({ service, config: typo, logger })).toThrow(/sip\.ringMS: is not a known setting .*did you mean "ringMs"/);
  });

  it('keeps the shipped configs and every config example in the docs valid', async () => {
    for (const file of ['config/example.gpu.json', 'config/example.bank.json', 'config/example.agents.json']) expect(() => loadConfig(['--config', file], {})).not.toThrow();
    const sections = Object.keys((CONFIG_SCHEMA as JsonSchema).properties ?? {});
    const docs = ['README.md', ...(await readdir('docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
    let examples = 0;
    for (const doc of docs) {
      for (const [, body] of (await readFile(doc, 'utf8')).matchAll(/```json\n([\s\S]*?)```/g)) {
        let value: unknown;
        try {
          value = JSON.parse(body);
        } catch {
          continue; // a fragment with placeholders, not a whole file
        }
        if (typeof value !== 'object' || value === null || Array.isArray(value)) continue;
        const keys = Object.keys(value);
        if (keys.length === 0 || !keys.every((k) => sections.includes(k))) continue;
        examples++;
        expect(configProblems(mergeConfig(DEFAULT_CONFIG, value)), `${doc}: ${keys.join(', ')}`).toEqual([]);
      }
    }
    expect(examples).toBeGreaterThanOrEqual(10);
  });

  it('suggests a key only when it is close to the one written', () => {
    expect(nearestKey('rtpportmin', ['rtpPortMin', 'rtpPortMax'])).toBe('rtpPortMin');
    expect(nearestKey('banana', ['rtpPortMin', 'host'])).toBeUndefined();
  });

  it('config-schema.ts does not import config.ts, directly or through another module', async () => {
    const seen = new Set<string>();
    const visit = async (file: string): Promise<void> => {
      if (seen.has(file)) return;
      seen.add(file);
      const source = await readFile(file, 'utf8');
      for (const [, spec] of source.matchAll(/^(?:import|export)[^;]*?from '(\.[^']+)\.js';/gms)) await visit(path.resolve(path.dirname(file), `${spec}.ts`));
    };
    await visit(path.resolve('src/config-schema.ts'));
    expect([...seen].filter((f) => f === path.resolve('src/config.ts'))).toEqual([]);
    expect(seen.size).toBeGreaterThan(5);
  });
});
