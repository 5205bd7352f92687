// The command line as a user runs it (a child process of bin/confidence-sidecar.js): JSON lines
// checked against the fixtures' expected.json, and bad input answered with one line and exit 2.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fixture } from './helpers/shared.ts';

const BIN = resolve(import.meta.dirname, '../bin/confidence-sidecar.js');

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('confidence-sidecar CLI', () => {
  const exp = JSON.parse(readFileSync(join(fixture('aidreams260K'), 'expected.json'), 'utf8'));

  it('generate --json: one line per token with its signals, then a summary', () => {
    const n = exp.greedy_ids.length - exp.prompt_ids.length;
    const r = cli(['generate', '--model', fixture('aidreams260K'), '--prompt', exp.prompt, '--max-tokens', String(n), '--json']);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const tokens = lines.slice(0, -1);
    expect(tokens.map((t) => t.token_id)).toEqual(exp.greedy_ids.slice(exp.prompt_ids.length));
    expect(exp.prompt + tokens.map((t) => t.text).join('')).toBe(exp.greedy_text);
    for (const t of tokens) {
      for (const key of ['index', 'token_id', 'text', 'logprob', 'entropy', 'top1_prob', 'norm_scale', 'entropy_neurons', 'frequency_neurons', 'repeat', 'interventions']) {
        expect(t).toHaveProperty(key);
      }
      const p = exp.prompt_ids.length + t.index - 1;
      expect(Math.abs(t.entropy - exp.entropy[p])).toBeLessThanOrEqual(1e-4);
    }
    expect(lines.at(-1)).toMatchObject({ type: 'summary', prompt_tokens: exp.prompt_ids.length, completion_tokens: n, finish_reason: 'length' });
    expect(lines.at(-1).tokens_per_s).toBeGreaterThan(0);
  });

  it('--dtype fp16 on CPU warns that it is meant for CUDA; int8 does not warn', () => {
    const args = (dtype: string) => ['generate', '--model', fixture('makemore-names'), '--dtype', dtype, '--prompt', 'a', '--max-tokens', '3'];
    const half = cli(args('fp16'));
    expect(half.code).toBe(0);
    expect(half.stderr).toContain('warning: --dtype fp16 is meant for --device cuda');
    const int8 = cli(args('int8'));
    expect(int8.code).toBe(0);
    expect(int8.stderr).not.toContain('warning');
  });

  it('score --ids --activations matches expected entropy, norm scale and activations', () => {
    const r = cli(['score', '--model', fixture('aidreams260K-onnx'), '--ids', JSON.stringify(exp.greedy_ids), '--activations']);
    expect(r.code).toBe(0);
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(rows).toHaveLength(exp.greedy_ids.length);
    rows.forEach((row, p) => {
      expect(row.position).toBe(p);
      expect(Math.abs(row.entropy - exp.entropy[p])).toBeLessThanOrEqual(1e-4);
      expect(Math.abs(row.norm_scale - exp.final_norm_scale[p])).toBeLessThanOrEqual(1e-4);
      const maxDiff = Math.max(...row.mlp_act.map((a: number, i: number) => Math.abs(a - exp.last_mlp_act[p][i])));
      expect(maxDiff).toBeLessThanOrEqual(1e-4);
    });
    expect(rows.at(-1).next_logprob).toBeNull();
  });

  // One test per case: on a loaded machine each child process takes seconds, and one test for all
  // of them ran past the timeout. The broken model folders are made once.
  describe('bad input: one line naming the problem, exit code 2, no stack trace', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cs-cli-'));
    // A truncated checkpoint.
    const broken = join(dir, 'broken');
    spawnSync('cp', ['-r', fixture('aidreams260K'), broken]);
    spawnSync('chmod', ['-R', 'u+w', broken]);
    const st = join(broken, 'model.safetensors');
    truncateSync(st, Math.floor(statSync(st).size / 2));
    // An unknown architecture.
    const unknown = join(dir, 'unknown');
    spawnSync('cp', ['-r', fixture('aidreams260K'), unknown]);
    spawnSync('chmod', ['-R', 'u+w', unknown]);
    const cfg = JSON.parse(readFileSync(join(unknown, 'config.json'), 'utf8'));
    writeFileSync(join(unknown, 'config.json'), JSON.stringify({ ...cfg, model_type: 'mamba' }));
    // A corrupt ONNX export.
    const corrupt = join(dir, 'corrupt');
    spawnSync('cp', ['-r', fixture('aidreams260K-onnx'), corrupt]);
    spawnSync('chmod', ['-R', 'u+w', corrupt]);
    writeFileSync(join(corrupt, 'onnx', 'model.onnx'), Buffer.from('not a protobuf at all \xff\xff\xff'));
    copyFileSync(join(fixture('aidreams260K'), 'config.json'), join(corrupt, 'config.json'));

    const cases: [string[], RegExp][] = [
      [['generate', '--model', join(dir, 'missing'), '--prompt', 'x'], /missing: model folder not found/],
      [['generate', '--model', broken, '--prompt', 'x'], /model\.safetensors.*truncated/],
      [['generate', '--model', unknown, '--prompt', 'x'], /config\.json.*mamba/],
      [['score', '--model', corrupt, '--text', 'x'], /model\.onnx/],
      [['generate', '--model', fixture('aidreams260K'), '--prompt', 'x', '--max-tokens', '0'], /--max-tokens must be >= 1/],
      [['generate', '--model', fixture('aidreams260K'), '--prompt', 'x', '--intervene', '3.5=explode:1'], /unknown mode "explode"/],
      [['generate', '--model', fixture('aidreams260K'), '--prompt', 'x', '--intervene', '2.5=clamp:1'], /only the last MLP layer \(3\)/],
      [['generate', '--model', fixture('aidreams260K'), '--prompt', 'x', '--intervene', '3.5=clamp:nan'], /not a finite number/],
      [['generate', '--model', fixture('aidreams260K'), '--prompt', 'x', '--intervene', '3.5=mean_ablate'], /calibration/],
      [['score', '--model', fixture('aidreams260K'), '--ids', '[1, 99999]'], /outside the vocabulary/],
      [['frobnicate'], /unknown command/],
    ];
    for (const [args, message] of cases) {
      it(args.map((a) => a.replace(dir, '$TMP')).join(' '), () => {
        const r = cli(args);
        expect(r.code, `${args.join(' ')}\n${r.stderr}`).toBe(2);
        expect(r.stderr).toMatch(message);
        expect(r.stderr).not.toMatch(/\n\s+at /); // no stack frames
      });
    }
  });
});
