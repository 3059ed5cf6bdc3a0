import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, loadConfig } from '../src/config.js';
import { createToolExecutor } from '../src/providers/llm/tool-filter.js';
import { configProblems } from '../src/config-schema.js';
import { resolveExecutionProviders } from '../src/providers/vad/execution-providers.js';

/** The one configuration file: schema validation with errors that name the path, and the shipped examples. */
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'config-test-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function load(content: unknown, env: NodeJS.ProcessEnv = {}): Promise<ReturnType<typeof loadConfig>> {
  const file = path.join(dir, `c-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content));
  return loadConfig(['--config', file], env);
}

async function problemsOf(content: unknown): Promise<string> {
  try {
    await load(content);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected the config to be rejected');
}

describe('configuration schema', () => {
  it('accepts the defaults and the shipped GPU example', async () => {
    expect(configProblems(DEFAULT_CONFIG, DEFAULT_CONFIG)).toEqual([]);
    const config = loadConfig(['--config', 'config/example.gpu.json'], {});
    expect(config.providers.asr.provider).toBe('vllm-realtime');
    expect(config.providers.llm.provider).toBe('openai');
    expect(config.providers.tts.voices?.fr).toBe('ff_siwis');
    expect(config.providers.tts.provider === 'openai-speech' && config.providers.tts.embeddedVoices?.fr).toBe('fr-FR');
    expect(config.agent.tools?.enabled).toContain('book_appointment');
    // Unset sections keep their defaults.
    expect(config.turn.endpointSilenceMs).toBe(DEFAULT_CONFIG.turn.endpointSilenceMs);
  });

  it('accepts the shipped bank example: the card-service rules and the demo bank tools', async () => {
    const config = loadConfig(['--config', 'config/example.bank.json'], {});
    expect(config.providers.llm).toEqual({ provider: 'rules', rulesPath: 'config/agent-bank.json' });
    expect(config.agent.tools?.bank?.customers?.[0].cards[0].last4).toBe('4111');
    expect(config.privacy.redact).toEqual(['card', 'iban', 'digits']);
    expect(config.recording.enabled).toBe(false);
    const tools = createToolExecutor(config.agent.tools);
    expect(tools.definitions().map((d) => d.name).sort()).toEqual(['block_card', 'end_call', 'get_current_time', 'transfer_to_human', 'verify_customer']);
  });

  it('names the path and the problem of every error at once', async () => {
    const message = await problemsOf({
      port: 'eighty',
      providers: { llm: { provider: 'openai', baseUrl: 8000, model: 'm' }, tts: { provider: 'auto', voices: { en: 3 } } },
      turn: { endpointSilenceMs: 5, speechTreshold: 0.5 },
      agnt: {},
    });
    for (const problem of [
      'providers.llm.baseUrl: must be a string',
      'port: must be an integer',
      'providers.tts.voices.en: must be a string',
      'turn.endpointSilenceMs: must be >= 20',
      'turn.speechTreshold: is not a known setting (check the spelling)',
      'agnt: is not a known setting',
      'c-',
    ])
      expect(message).toContain(problem);
  });

  it('checks the compliance settings: redaction kinds, store keys, admin keys, recordings, the eSpeak engine', async () => {
    const message = await problemsOf({
      privacy: { redact: ['card', 'ssn'] },
      store: { encryptionKeys: ['not-a-key'] },
      auth: { adminKeyHashes: ['secret'] },
      recording: { enabled: 'yes', bitrate: 100 },
      providers: { tts: { provider: 'auto', espeakEngine: 'gpl' } },
    });
    expect(message).toMatch(/privacy\.redact\[1\]: must be one of/);
    expect(message).toContain('store.encryptionKeys[0]: must be 32 random bytes in base64');
    expect(message).toContain('auth.adminKeyHashes[0]');
    expect(message).toContain('recording.enabled: must be true or false');
    expect(message).toContain('recording.bitrate: must be >= 6000');
    expect(message).toMatch(/providers\.tts\.espeakEngine: must be one of/);
    const ok = await load({ store: { encryptionKeys: ['A'.repeat(43) + '='] }, recording: { enabled: true, dir: '/tmp/rec' } });
    expect(ok.recording).toMatchObject({ enabled: true, dir: '/tmp/rec', retentionDays: 30 });
  });

  it('checks each provider block against its own provider', async () => {
    expect(await problemsOf({ providers: { asr: { provider: 'whisper' } } })).toContain('providers.asr: unknown provider "whisper"');
    const vllm = await problemsOf({ providers: { asr: { provider: 'vllm-realtime', url: 'http://x/v1/realtime' } } });
    expect(vllm).toContain('providers.asr.url: must be a ws:// or wss:// URL');
    expect(vllm).toContain('providers.asr.model: is required');
    expect(await problemsOf({ providers: { llm: { provider: 'llamacpp' } } })).toContain('providers.llm.modelPath: is required');
    expect(await problemsOf({ providers: { vad: { provider: 'silero', executionProviders: ['gpu'] } } })).toMatch(/providers\.vad\.executionProviders\[0\]: must be one of "cpu", "cuda"/);
    expect(await problemsOf({ agent: { defaultLanguage: 'English' } })).toContain('agent.defaultLanguage: must be a language tag');
    expect(await problemsOf({ auth: { apiKeyHashes: ['plain-text-key'] } })).toContain('auth.apiKeyHashes[0]: must be a SHA-256 hex digest');
    // Remote stages take one URL or several; one of the two is required.
    expect(await problemsOf({ providers: { asr: { provider: 'vllm-realtime', model: 'm' } } })).toMatch(/providers\.asr.*url/);
    expect(await problemsOf({ providers: { llm: { provider: 'openai', model: 'm', baseUrls: ['ftp://x'] } } })).toContain('providers.llm.baseUrls[0]');
    expect(await problemsOf({ providers: { tts: { provider: 'openai-speech', baseUrl: 'http://x/v1', model: 'm' } } })).toContain('providers.tts.voices: is required');
    const several = await load({ providers: { asr: { provider: 'vllm-realtime', urls: ['ws://a/v1/realtime', 'ws://b/v1/realtime'], model: 'm', failover: { strategy: 'round-robin' } } } });
    expect(several.providers.asr).toMatchObject({ urls: ['ws://a/v1/realtime', 'ws://b/v1/realtime'] });
    const ok = await load({ providers: { asr: { provider: 'openai-batch', baseUrl: 'http://127.0.0.1:9000/v1', model: 'whisper-large-v3-turbo' } } });
    expect(ok.providers.asr).toEqual({ provider: 'openai-batch', baseUrl: 'http://127.0.0.1:9000/v1', model: 'whisper-large-v3-turbo' });
  });

  it('reports unreadable files and bad environment values clearly', async () => {
    expect(await problemsOf('{ "port": 80,')).toMatch(/is not valid JSON/);
    expect(await problemsOf('[1, 2]')).toMatch(/must hold a JSON object/);
    expect(() => loadConfig(['--config', path.join(dir, 'missing.json')], {})).toThrow(/config file not found/);
    await expect(load({}, { PORT: '99999' })).rejects.toThrow(/PORT must be 0\.\.65535/);
    await expect(load({}, { LOG_LEVEL: 'loud' })).rejects.toThrow(/logLevel: must be one of/);
  });
});

describe('onnxruntime execution providers', () => {
  it('keeps cuda only when the build has it and its library is installed, always ending with cpu', () => {
    const build = [
      { name: 'cpu', bundled: true },
      { name: 'cuda', bundled: false },
    ];
    expect(resolveExecutionProviders(['cuda', 'cpu'], build, () => true)).toEqual({ providers: ['cuda', 'cpu'], dropped: [] });
    const missing = resolveExecutionProviders(['cuda'], build, () => false);
    expect(missing.providers).toEqual(['cpu']);
    expect(missing.dropped[0].reason).toMatch(/libonnxruntime_providers_cuda\.so is not installed/);
    expect(resolveExecutionProviders(['coreml'], build).dropped[0].reason).toMatch(/no "coreml" execution provider/);
    // This machine's real build (CPU-only npm install): cuda falls back to cpu.
    const here = resolveExecutionProviders(['cuda', 'cpu']);
    expect(here.providers[here.providers.length - 1]).toBe('cpu');
  });
});
