import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downloadModel, listModels, loadManifest, verifyModel, type Manifest, type Progress } from '../audio-models/models.js';

/**
 * The models command against a local HTTP server on 127.0.0.1 serving generated "model" files (never the
 * internet): download with progress, sha256 verification, a corrupted download refused, list and verify output.
 */
const run = promisify(execFile);
let server: Server;
let base: string;
let dir: string;
let manifestFile: string;
let manifest: Manifest;
const good = randomBytes(3 * 1024 * 1024 + 17);
const goodSha = createHash('sha256').update(good).digest('hex');
const goodSha1 = createHash('sha1').update(good).digest('hex');
const small = Buffer.from('{"voice":"test"}');
const requests: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'models-test-'));
  server = createServer((req, res) => {
    requests.push(req.url ?? '');
    const body = req.url === '/good.bin' ? good : req.url === '/small.json' ? small : req.url === '/corrupt.bin' ? Buffer.concat([good.subarray(0, 1000), Buffer.from('X'), good.subarray(1001)]) : null;
    if (!body) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' });
    // Several chunks, so progress has something to report.
    let off = 0;
    const pump = (): void => {
      while (off < body.length) {
        const chunk = body.subarray(off, off + 256 * 1024);
        off += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const entry = (name: string, files: object[]) => ({ name, task: 'asr-batch', languages: ['*'], source: base, license: 'MIT', size: '3 MB', files });
  manifestFile = path.join(dir, 'manifest.json');
  await writeFile(
    manifestFile,
    JSON.stringify({
      version: 1,
      models: [
        entry('fake-whisper', [
          { path: 'model.bin', url: `${base}/good.bin`, sizeBytes: good.length, sha256: goodSha },
          { path: 'config.json', url: `${base}/small.json`, sizeBytes: null, sha256: createHash('sha256').update(small).digest('hex') },
        ]),
        entry('fake-sha1-only', [{ path: 'model.bin', url: `${base}/good.bin`, sizeBytes: null, sha256: null, sha1: goodSha1 }]),
        entry('fake-corrupt', [{ path: 'model.bin', url: `${base}/corrupt.bin`, sizeBytes: good.length, sha256: goodSha }]),
        entry('fake-unverified', [{ path: 'model.bin', url: `${base}/good.bin`, sizeBytes: null, sha256: null }]),
        entry('fake-missing', [{ path: 'model.bin', url: `${base}/nope.bin`, sizeBytes: null, sha256: goodSha }]),
      ],
    }),
  );
  manifest = await loadManifest(manifestFile);
});

afterAll(async () => {
  server?.close();
  await rm(dir, { recursive: true, force: true });
});

const modelsDir = () => path.join(dir, 'models');

describe('models manifest and download', () => {
  it('the shipped manifest is valid and covers the supported model families', async () => {
    const shipped = await loadManifest();
    const names = shipped.models.map((m) => m.name);
    for (const prefix of ['voxtral-mini-4b-realtime-2602', 'whisper-large-v3-turbo', 'whisper-small', 'piper-en_US', 'piper-fr_FR', 'piper-de_DE', 'piper-es_ES', 'piper-it_IT', 'mistral-small', 'ministral', 'silero-vad']) {
      expect(names.some((n) => n.startsWith(prefix)), prefix).toBe(true);
    }
    for (const m of shipped.models) for (const f of m.files) expect(f.url).toMatch(/^https:\/\//);
  });

  it('downloads with progress, verifies the sha256, installs atomically, and skips an intact install', async () => {
    const progress: Progress[] = [];
    const results = await downloadModel(manifest, 'fake-whisper', { modelsDir: modelsDir(), onProgress: (p) => progress.push(p) });
    expect(results.map((r) => r.verifiedBy)).toEqual(['sha256', 'sha256']);
    const installed = path.join(modelsDir(), 'fake-whisper', 'model.bin');
    expect(createHash('sha256').update(await readFile(installed)).digest('hex')).toBe(goodSha);
    expect(readdirSync(path.dirname(installed)).filter((f) => f.includes('.part-'))).toEqual([]);
    const mine = progress.filter((p) => p.file === 'model.bin');
    expect(mine.length).toBeGreaterThan(3);
    expect(mine[mine.length - 1]).toEqual({ file: 'model.bin', received: good.length, total: good.length });

    const before = requests.length;
    const again = await downloadModel(manifest, 'fake-whisper', { modelsDir: modelsDir() });
    expect(again.every((r) => r.skipped)).toBe(true);
    expect(requests.length).toBe(before);
    expect((await verifyModel(manifest, 'fake-whisper', modelsDir())).ok).toBe(true);
  });

  it('verifies by upstream sha1 when that is all that is published', async () => {
    const [r] = await downloadModel(manifest, 'fake-sha1-only', { modelsDir: modelsDir() });
    expect(r.verifiedBy).toBe('sha1');
  });

  it('rejects a corrupted download and leaves nothing installed', async () => {
    await expect(downloadModel(manifest, 'fake-corrupt', { modelsDir: modelsDir() })).rejects.toThrow(/sha256 mismatch/);
    const folder = path.join(modelsDir(), 'fake-corrupt');
    expect(existsSync(path.join(folder, 'model.bin'))).toBe(false);
    expect(readdirSync(folder)).toEqual([]);
    await expect(downloadModel(manifest, 'fake-missing', { modelsDir: modelsDir() })).rejects.toThrow(/HTTP 404/);
  });

  it('refuses an unverifiable file unless allowed, then records its hash so verify catches later corruption', async () => {
    await expect(downloadModel(manifest, 'fake-unverified', { modelsDir: modelsDir() })).rejects.toThrow(/--allow-unverified/);
    const [r] = await downloadModel(manifest, 'fake-unverified', { modelsDir: modelsDir(), allowUnverified: true });
    expect(r.verifiedBy).toBe('unverified');
    expect((await verifyModel(manifest, 'fake-unverified', modelsDir())).ok).toBe(true);
    const file = path.join(modelsDir(), 'fake-unverified', 'model.bin');
    const bytes = await readFile(file);
    bytes[10] ^= 0xff;
    await writeFile(file, bytes);
    const v = await verifyModel(manifest, 'fake-unverified', modelsDir());
    expect(v.ok).toBe(false);
    expect(v.files[0].reason).toMatch(/recorded at download/);
  });

  it('lists what is installed, from the CLI too', async () => {
    const states = Object.fromEntries((await listModels(manifest, modelsDir())).map((s) => [s.entry.name, s.state]));
    expect(states).toMatchObject({ 'fake-whisper': 'installed', 'fake-sha1-only': 'installed', 'fake-corrupt': 'absent', 'fake-missing': 'absent' });

    const tsx = path.resolve('node_modules/.bin/tsx');
    const { stdout } = await run(tsx, ['audio-models/cli.ts', 'list', '--manifest', manifestFile, '--models-dir', modelsDir()]);
    expect(stdout).toMatch(/^installed\s+fake-whisper\s/m);
    expect(stdout).toMatch(/^-\s+fake-corrupt\s/m);
    expect(stdout).toMatch(/fake-unverified .*no published checksum/);
    const verify = await run(tsx, ['audio-models/cli.ts', 'verify', 'fake-whisper', '--manifest', manifestFile, '--models-dir', modelsDir()]);
    expect(verify.stdout).toMatch(/^ok\s+fake-whisper\/model\.bin \(sha256 matches the manifest\)/m);
    const failed = await run(tsx, ['audio-models/cli.ts', 'download', 'no-such-model', '--manifest', manifestFile, '--models-dir', modelsDir()]).catch((e: { code: number; stderr: string }) => e);
    expect((failed as { code: number }).code).toBe(1);
    expect((failed as { stderr: string }).stderr).toMatch(/unknown model "no-such-model"/);
  });
});
