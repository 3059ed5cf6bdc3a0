/**
 * Build time and memory of one PocketSphinx decoder per kind: the generic English LM, a grammar compiled from
 * the rules agent's grammarSpecs() (English; Spanish when its model is present), and a phone loop.
 *
 *   npx tsx loadtest/asr-decoder-init.ts
 */
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { compileGrammar, loadDictionary } from '../src/providers/asr/grammar/compile.js';
import { acousticModel, DEFAULT_SPANISH_MODEL_DIR, modelPresent } from '../src/providers/asr/pocketsphinx/grammar.js';
import { DEFAULT_MODEL_DIR } from '../src/providers/asr/pocketsphinx/index.js';
import { bindPocketSphinx, type Ptr } from '../src/providers/asr/pocketsphinx/native.js';
import { RuleBasedAgent } from '../src/providers/llm/rules/index.js';

const rssMb = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) / 1024;

async function main(): Promise<void> {
  const native = bindPocketSphinx();
  const dir = mkdtempSync(path.join(tmpdir(), 'asr-init-'));
  const base = ['-samprate', '16000', '-remove_silence', 'no'];
  const kinds: Record<string, { args: string[]; loop?: boolean }> = {
    genericLm: { args: ['-hmm', `${DEFAULT_MODEL_DIR}/en-us`, '-lm', `${DEFAULT_MODEL_DIR}/en-us.lm.bin`, '-dict', `${DEFAULT_MODEL_DIR}/cmudict-en-us.dict`, '-fwdflat', 'no', ...base] },
  };
  const esDir = process.env.POCKETSPHINX_ES_DIR ?? DEFAULT_SPANISH_MODEL_DIR;
  const languages = modelPresent(acousticModel('es', esDir)) ? ['en', 'es'] : ['en'];
  // The grammars the service compiles: the rules agent's own description of what it understands.
  const agent = new RuleBasedAgent();
  await agent.load();
  const specs = agent.grammarSpecs().filter((s) => languages.includes(s.language));
  for (const spec of specs) {
    const model = acousticModel(spec.language, spec.language === 'es' ? esDir : DEFAULT_MODEL_DIR);
    const g = await compileGrammar(spec, await loadDictionary(model.dict));
    const dict = path.join(dir, `${spec.language}.dict`);
    const jsgf = path.join(dir, `${spec.language}.jsgf`);
    writeFileSync(dict, g.dict);
    writeFileSync(jsgf, g.jsgf);
    kinds[`grammar_${spec.language}`] = { args: ['-hmm', model.hmm, '-dict', dict, '-jsgf', jsgf, ...base] };
    kinds[`phoneLoop_${spec.language}`] = { args: ['-hmm', model.hmm, '-dict', dict, '-allphone_ci', 'yes', ...base], loop: true };
  }
  const out: Record<string, { initMs: number[]; rssMb: number[] }> = {};
  for (const [name, kind] of Object.entries(kinds)) {
    const row = { initMs: [] as number[], rssMb: [] as number[] };
    const built: Ptr[] = [];
    for (let i = 0; i < 3; i++) {
      const r0 = rssMb();
      const t0 = performance.now();
      const ps = await native.initDecoder(kind.args);
      if (ps === 0n) throw new Error(`${name}: ps_init failed`);
      if (kind.loop) await native.setAllphone(ps, 'loop');
      row.initMs.push(Math.round(performance.now() - t0));
      row.rssMb.push(Math.round(rssMb() - r0));
      built.push(ps);
    }
    for (const ps of built) native.freeDecoder(ps);
    await new Promise((resolve) => setTimeout(resolve, 300));
    out[name] = row;
  }
  rmSync(dir, { recursive: true, force: true });
  console.log(JSON.stringify(out, null, 2));
}

main().then(() => process.exit(0), (err: unknown) => {
  console.error(err);
  process.exit(1);
});
