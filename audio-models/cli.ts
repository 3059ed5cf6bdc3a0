/**
 * `npm run models -- <command>` (or `tsx audio-models/cli.ts <command>`):
 *
 *   list                         every model in the manifest and whether it is installed
 *   download NAME [--allow-unverified]
 *                                fetch (progress bar), verify, install into the models directory
 *   verify [NAME]                re-hash installed files (all installed models without NAME)
 *
 * Options: --models-dir DIR (default: config.modelsDir from --config / VOICE_AGENT_CONFIG, else ./models),
 * --manifest FILE (default audio-models/manifest.json). HF_TOKEN is sent to huggingface.co for gated models.
 * Needs a connected machine for `download`; the service itself never downloads anything.
 */
import { loadConfig } from '../src/config.js';
import { DEFAULT_MANIFEST, downloadModel, formatBytes, listModels, loadManifest, ModelError, verifyModel, type Progress } from './models.js';

function flag(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  if (i < 0) return undefined;
  const v = argv[i + 1];
  if (v === undefined || v.startsWith('--')) throw new ModelError(`${name} needs a value`);
  return v;
}

function progressPrinter(stream: NodeJS.WriteStream): (p: Progress) => void {
  let lastDraw = 0;
  let lastPct = -1;
  const started = performance.now();
  return (p) => {
    const now = performance.now();
    const done = p.total !== null && p.received >= p.total;
    const secs = Math.max(0.001, (now - started) / 1000);
    const rate = `${formatBytes(p.received / secs)}/s`;
    if (stream.isTTY) {
      if (now - lastDraw < 100 && !done) return;
      lastDraw = now;
      const width = 30;
      const frac = p.total ? Math.min(1, p.received / p.total) : 0;
      const bar = p.total ? `[${'#'.repeat(Math.round(frac * width)).padEnd(width, '-')}] ${(frac * 100).toFixed(0).padStart(3)}%` : '[downloading]';
      stream.write(`\r${p.file} ${bar} ${formatBytes(p.received)}${p.total ? ` / ${formatBytes(p.total)}` : ''} ${rate}   `);
      if (done) stream.write('\n');
    } else {
      // Logs and CI: a line per 10 %.
      const pct = p.total ? Math.floor((p.received / p.total) * 10) * 10 : -1;
      if (pct === lastPct || pct < 0) return;
      lastPct = pct;
      stream.write(`${p.file}: ${pct}% (${formatBytes(p.received)}${p.total ? ` of ${formatBytes(p.total)}` : ''}, ${rate})\n`);
    }
  };
}

async function main(argv: string[]): Promise<number> {
  const [command, name] = argv.filter((a, i) => !a.startsWith('--') && !(i > 0 && ['--models-dir', '--manifest', '--config'].includes(argv[i - 1])));
  const manifestFile = flag(argv, '--manifest') ?? DEFAULT_MANIFEST;
  const modelsDir = flag(argv, '--models-dir') ?? loadConfig(argv).modelsDir;
  const out = process.stdout;

  switch (command) {
    case 'list': {
      const manifest = await loadManifest(manifestFile);
      const rows = await listModels(manifest, modelsDir);
      out.write(`models directory: ${modelsDir}\n`);
      for (const r of rows) {
        const mark = r.state === 'installed' ? 'installed' : r.state === 'partial' ? 'partial  ' : '-        ';
        const verified = r.entry.files.every((f) => f.sha256 !== null || f.sha1 !== undefined) ? '' : ' (no published checksum)';
        out.write(`${mark}  ${r.entry.name.padEnd(46)} ${r.entry.task.padEnd(13)} ${r.entry.size.padEnd(9)} ${r.entry.license}${verified}\n`);
      }
      return 0;
    }
    case 'download': {
      if (!name) throw new ModelError('usage: models download NAME [--allow-unverified]');
      const manifest = await loadManifest(manifestFile);
      const token = process.env.HF_TOKEN;
      const controller = new AbortController();
      process.once('SIGINT', () => controller.abort());
      const results = await downloadModel(manifest, name, {
        modelsDir,
        allowUnverified: argv.includes('--allow-unverified'),
        onProgress: progressPrinter(process.stderr),
        headers: token ? { authorization: `Bearer ${token}` } : undefined,
        signal: controller.signal,
      });
      for (const r of results) {
        out.write(`${r.skipped ? 'already installed' : 'installed'}: ${r.path} (${formatBytes(r.sizeBytes)}, sha256 ${r.sha256}, ${r.verifiedBy === 'unverified' ? 'UNVERIFIED: no published checksum' : `verified by ${r.verifiedBy}`})\n`);
      }
      return 0;
    }
    case 'verify': {
      const manifest = await loadManifest(manifestFile);
      const names = name ? [name] : (await listModels(manifest, modelsDir)).filter((r) => r.state !== 'absent').map((r) => r.entry.name);
      if (names.length === 0) {
        out.write('no models installed\n');
        return 0;
      }
      let ok = true;
      for (const n of names) {
        const v = await verifyModel(manifest, n, modelsDir);
        ok &&= v.ok;
        for (const f of v.files) out.write(`${f.ok ? 'ok  ' : 'FAIL'}  ${n}/${f.file}${f.ok ? ` (${f.verifiedBy === 'unverified' ? 'matches the sha256 recorded at download' : `${f.verifiedBy} matches the manifest`})` : `: ${f.reason}`}\n`);
      }
      return ok ? 0 : 1;
    }
    default:
      out.write('usage: models list | download NAME [--allow-unverified] | verify [NAME]   [--models-dir DIR] [--manifest FILE]\n');
      return command ? 2 : 0;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`models: ${err instanceof ModelError ? err.message : (err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
