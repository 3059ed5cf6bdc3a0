/**
 * Model manifest and download tooling (`npm run models -- list|download NAME|verify [NAME]`, see cli.ts).
 *
 * A model is one or more files under `<modelsDir>/<name>/`. Downloads stream to a temporary file in that folder
 * while hashing (sha256, and sha1 where upstream publishes only that), are checked against the manifest, and
 * only then renamed into place, so a model file is either complete and verified or absent. A file whose sha256
 * the manifest cannot vouch for is refused unless `allowUnverified`; its observed hash is then recorded in
 * `<name>/.checksums.json`, so `verify` still detects later corruption. Nothing here runs inside the service.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface ModelFile {
  /** File name inside the model's folder. */
  path: string;
  url: string;
  sizeBytes: number | null;
  sha256: string | null;
  /** Upstream's published SHA-1, when that is all it publishes (whisper.cpp). */
  sha1?: string;
}

export interface ModelEntry {
  name: string;
  task: string;
  format?: string;
  languages: string[];
  source: string;
  license: string;
  size: string;
  notes?: string;
  files: ModelFile[];
}

export interface Manifest {
  version: 1;
  models: ModelEntry[];
}

export class ModelError extends Error {
  override readonly name = 'ModelError';
}

export const DEFAULT_MANIFEST = path.join(path.dirname(fileURLToPath(import.meta.url)), 'manifest.json');

const HEX = (n: number) => new RegExp(`^[0-9a-f]{${n}}$`);

export async function loadManifest(file: string = DEFAULT_MANIFEST): Promise<Manifest> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new ModelError(`cannot read manifest ${file}: ${(err as Error).message}`);
  }
  const problems: string[] = [];
  const m = raw as Partial<Manifest>;
  if (m.version !== 1) problems.push('version must be 1');
  if (!Array.isArray(m.models)) problems.push('models must be an array');
  const names = new Set<string>();
  (m.models ?? []).forEach((e, i) => {
    const at = `models[${i}]${typeof e?.name === 'string' ? ` (${e.name})` : ''}`;
    if (typeof e?.name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(e.name)) problems.push(`${at}.name must be letters, digits, . _ -`);
    else if (names.has(e.name)) problems.push(`${at}: duplicate name`);
    else names.add(e.name);
    for (const key of ['task', 'source', 'license', 'size'] as const) if (typeof e?.[key] !== 'string') problems.push(`${at}.${key} must be a string`);
    if (!Array.isArray(e?.languages)) problems.push(`${at}.languages must be an array`);
    if (!Array.isArray(e?.files) || e.files.length === 0) problems.push(`${at}.files must be a non-empty array`);
    (e?.files ?? []).forEach((f, j) => {
      const fat = `${at}.files[${j}]`;
      if (typeof f?.path !== 'string' || f.path.includes('/') || f.path.includes('\\') || f.path.startsWith('.')) problems.push(`${fat}.path must be a plain file name`);
      if (typeof f?.url !== 'string' || !/^https?:\/\//.test(f.url)) problems.push(`${fat}.url must be an http(s) URL`);
      if (f?.sha256 !== null && !(typeof f?.sha256 === 'string' && HEX(64).test(f.sha256))) problems.push(`${fat}.sha256 must be 64 hex digits or null`);
      if (f?.sha1 !== undefined && !(typeof f.sha1 === 'string' && HEX(40).test(f.sha1))) problems.push(`${fat}.sha1 must be 40 hex digits`);
      if (f?.sizeBytes !== null && !(Number.isInteger(f?.sizeBytes) && (f?.sizeBytes ?? 0) >= 0)) problems.push(`${fat}.sizeBytes must be an integer or null`);
    });
  });
  if (problems.length > 0) throw new ModelError(`manifest ${file} is invalid:\n  - ${problems.join('\n  - ')}`);
  return m as Manifest;
}

export function findModel(manifest: Manifest, name: string): ModelEntry {
  const entry = manifest.models.find((m) => m.name === name);
  if (!entry) throw new ModelError(`unknown model "${name}"; known: ${manifest.models.map((m) => m.name).join(', ')}`);
  return entry;
}

/** Where the service and this tool expect a model's file. */
export function modelFilePath(modelsDir: string, model: string, file: string): string {
  return path.join(path.resolve(modelsDir), model, file);
}

type Checksums = Record<string, { sha256: string; sizeBytes: number; verifiedBy: 'sha256' | 'sha1' | 'unverified' }>;

async function readChecksums(dir: string): Promise<Checksums> {
  try {
    return JSON.parse(await readFile(path.join(dir, '.checksums.json'), 'utf8')) as Checksums;
  } catch {
    return {};
  }
}

async function writeChecksums(dir: string, sums: Checksums): Promise<void> {
  const tmp = path.join(dir, `.checksums.json.${process.pid}.tmp`);
  await writeFile(tmp, JSON.stringify(sums, null, 2));
  await rename(tmp, path.join(dir, '.checksums.json'));
}

export interface Progress {
  file: string;
  received: number;
  total: number | null;
}

export interface DownloadOptions {
  modelsDir: string;
  allowUnverified?: boolean;
  onProgress?: (p: Progress) => void;
  /** Extra request headers (e.g. a Hugging Face token for gated models). */
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

export interface DownloadResult {
  file: string;
  path: string;
  sha256: string;
  sizeBytes: number;
  verifiedBy: 'sha256' | 'sha1' | 'unverified';
  skipped: boolean;
}

/** Downloads every file of a model (skipping files already installed and intact). */
export async function downloadModel(manifest: Manifest, name: string, options: DownloadOptions): Promise<DownloadResult[]> {
  const entry = findModel(manifest, name);
  const unverified = entry.files.filter((f) => f.sha256 === null && f.sha1 === undefined);
  if (unverified.length > 0 && !options.allowUnverified) {
    throw new ModelError(
      `${name}: no published checksum for ${unverified.map((f) => f.path).join(', ')}; refusing to install an unverified file ` +
        '(pass --allow-unverified to accept it; its sha256 is then recorded for later `verify`)',
    );
  }
  const dir = path.join(path.resolve(options.modelsDir), name);
  await mkdir(dir, { recursive: true });
  const results: DownloadResult[] = [];
  for (const file of entry.files) results.push(await downloadFile(dir, file, options));
  return results;
}

async function downloadFile(dir: string, file: ModelFile, options: DownloadOptions): Promise<DownloadResult> {
  const target = path.join(dir, file.path);
  const sums = await readChecksums(dir);
  if (existsSync(target)) {
    const check = await verifyFile(dir, file, sums[file.path]);
    if (check.ok) return { file: file.path, path: target, sha256: check.sha256, sizeBytes: check.sizeBytes, verifiedBy: check.verifiedBy, skipped: true };
  }
  const tmp = `${target}.part-${process.pid}`;
  try {
    const res = await fetch(file.url, { headers: options.headers, redirect: 'follow', signal: options.signal });
    if (!res.ok || !res.body) throw new ModelError(`${file.url}: HTTP ${res.status}${res.status === 401 || res.status === 403 ? ' (gated model? set HF_TOKEN)' : ''}`);
    const length = Number(res.headers.get('content-length'));
    const total = file.sizeBytes ?? (Number.isFinite(length) && length > 0 ? length : null);
    const sha256 = createHash('sha256');
    const sha1 = createHash('sha1');
    let received = 0;
    const out = createWriteStream(tmp, { flags: 'w' });
    const closed = new Promise<void>((resolve, reject) => {
      out.once('close', resolve);
      out.once('error', reject);
    });
    try {
      for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
        sha256.update(chunk);
        sha1.update(chunk);
        received += chunk.length;
        if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', r));
        options.onProgress?.({ file: file.path, received, total });
      }
    } finally {
      out.end();
      await closed;
    }
    const got256 = sha256.digest('hex');
    const got1 = sha1.digest('hex');
    if (file.sizeBytes !== null && received !== file.sizeBytes) throw new ModelError(`${file.path}: got ${received} bytes, expected ${file.sizeBytes}`);
    let verifiedBy: DownloadResult['verifiedBy'] = 'unverified';
    if (file.sha256 !== null) {
      if (got256 !== file.sha256) throw new ModelError(`${file.path}: sha256 mismatch (got ${got256}, expected ${file.sha256}); the download was discarded`);
      verifiedBy = 'sha256';
    } else if (file.sha1 !== undefined) {
      if (got1 !== file.sha1) throw new ModelError(`${file.path}: sha1 mismatch (got ${got1}, expected ${file.sha1}); the download was discarded`);
      verifiedBy = 'sha1';
    }
    await rename(tmp, target);
    sums[file.path] = { sha256: got256, sizeBytes: received, verifiedBy };
    await writeChecksums(dir, sums);
    return { file: file.path, path: target, sha256: got256, sizeBytes: received, verifiedBy, skipped: false };
  } catch (err) {
    await rm(tmp, { force: true });
    if (err instanceof ModelError) throw err;
    throw new ModelError(`${file.url}: download failed: ${(err as Error).message}`);
  }
}

export interface FileCheck {
  ok: boolean;
  reason?: string;
  sha256: string;
  sizeBytes: number;
  verifiedBy: 'sha256' | 'sha1' | 'unverified';
}

async function hashFile(file: string): Promise<{ sha256: string; sha1: string; size: number }> {
  const a = createHash('sha256');
  const b = createHash('sha1');
  let size = 0;
  for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
    a.update(chunk);
    b.update(chunk);
    size += chunk.length;
  }
  return { sha256: a.digest('hex'), sha1: b.digest('hex'), size };
}

async function verifyFile(dir: string, file: ModelFile, recorded: Checksums[string] | undefined): Promise<FileCheck> {
  const target = path.join(dir, file.path);
  const { sha256, sha1, size } = await hashFile(target);
  const base = { sha256, sizeBytes: size };
  if (file.sizeBytes !== null && size !== file.sizeBytes) return { ...base, ok: false, reason: `size ${size}, expected ${file.sizeBytes}`, verifiedBy: 'unverified' };
  if (file.sha256 !== null) {
    return sha256 === file.sha256 ? { ...base, ok: true, verifiedBy: 'sha256' } : { ...base, ok: false, reason: `sha256 ${sha256}, expected ${file.sha256}`, verifiedBy: 'sha256' };
  }
  if (file.sha1 !== undefined) {
    return sha1 === file.sha1 ? { ...base, ok: true, verifiedBy: 'sha1' } : { ...base, ok: false, reason: `sha1 ${sha1}, expected ${file.sha1}`, verifiedBy: 'sha1' };
  }
  if (!recorded) return { ...base, ok: false, reason: 'no checksum published or recorded at download', verifiedBy: 'unverified' };
  return sha256 === recorded.sha256
    ? { ...base, ok: true, verifiedBy: 'unverified' }
    : { ...base, ok: false, reason: `sha256 ${sha256} differs from the one recorded at download (${recorded.sha256})`, verifiedBy: 'unverified' };
}

export type InstallState = 'installed' | 'partial' | 'absent';

export interface ModelStatus {
  entry: ModelEntry;
  state: InstallState;
  /** Bytes on disk of the files present. */
  bytes: number;
}

/** What is installed, from file presence and sizes (fast; `verifyModel` hashes). */
export async function listModels(manifest: Manifest, modelsDir: string): Promise<ModelStatus[]> {
  return Promise.all(
    manifest.models.map(async (entry) => {
      let present = 0;
      let bytes = 0;
      for (const f of entry.files) {
        try {
          const s = await stat(modelFilePath(modelsDir, entry.name, f.path));
          if (f.sizeBytes === null || s.size === f.sizeBytes) present++;
          bytes += s.size;
        } catch {
          /* absent */
        }
      }
      const state: InstallState = present === entry.files.length ? 'installed' : present > 0 || bytes > 0 ? 'partial' : 'absent';
      return { entry, state, bytes };
    }),
  );
}

export interface VerifyResult {
  model: string;
  ok: boolean;
  files: Array<{ file: string } & Partial<FileCheck> & { ok: boolean; reason?: string }>;
}

/** Re-hashes an installed model's files against the manifest (or the checksums recorded at download). */
export async function verifyModel(manifest: Manifest, name: string, modelsDir: string): Promise<VerifyResult> {
  const entry = findModel(manifest, name);
  const dir = path.join(path.resolve(modelsDir), name);
  const sums = await readChecksums(dir);
  const files: VerifyResult['files'] = [];
  for (const f of entry.files) {
    if (!existsSync(path.join(dir, f.path))) {
      files.push({ file: f.path, ok: false, reason: 'not installed' });
      continue;
    }
    files.push({ file: f.path, ...(await verifyFile(dir, f, sums[f.path])) });
  }
  return { model: name, ok: files.every((f) => f.ok), files };
}

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}
