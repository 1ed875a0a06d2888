// Runner: real commands through zx, dry-run only for changes, secrets masked everywhere.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, test } from 'node:test';
import { CommandError } from '../../lib/errors.ts';
import { RecordingRunner, ShellRunner } from '../../lib/runner.ts';
import { clearSecretsForTest, registerSecret } from '../../lib/secrets.ts';
import { tempDir } from '../helpers/fixtures.ts';

afterEach(() => clearSecretsForTest());

test('runs a real command with stdin and captures its output', async () => {
  const lines: string[] = [];
  const r = new ShellRunner(false, (l) => lines.push(l));
  const res = await r.run({ argv: ['cat'], input: 'hello from stdin' });
  assert.equal(res.stdout, 'hello from stdin');
  assert.deepEqual(lines, ['$ cat']);
});

test('arguments are passed as separate words, never re-split by a shell', async () => {
  const r = new ShellRunner(false, () => {});
  const res = await r.run({ argv: ['printf', '%s|', 'a b', '$(echo no)', "it's"] });
  assert.equal(res.stdout, "a b|$(echo no)|it's|");
});

test('a failing command throws with exit code and stderr; nothrow returns it', async () => {
  const r = new ShellRunner(false, () => {});
  await assert.rejects(r.run({ argv: ['sh', '-c', 'echo boom >&2; exit 3'] }), (err: unknown) => {
    assert.ok(err instanceof CommandError);
    assert.equal(err.code, 3);
    assert.match(err.message, /boom/);
    return true;
  });
  const res = await r.run({ argv: ['sh', '-c', 'exit 4'], nothrow: true });
  assert.equal(res.code, 4);
});

test('dry-run prints changing commands instead of running them, and runs reading ones', async () => {
  const dir = tempDir();
  const lines: string[] = [];
  const r = new ShellRunner(true, (l) => lines.push(l));
  const target = path.join(dir, 'created');
  await r.run({ argv: ['touch', target], mutates: true });
  assert.equal(fs.existsSync(target), false);
  assert.deepEqual(lines, [`[dry-run] touch ${target}`]);
  const read = await r.run({ argv: ['echo', 'read-only'] });
  assert.equal(read.stdout.trim(), 'read-only');
});

test('registered secrets never reach a log line or an error', async () => {
  registerSecret('s3cr3t-value');
  const lines: string[] = [];
  const r = new ShellRunner(false, (l) => lines.push(l));
  await assert.rejects(r.run({ argv: ['sh', '-c', 'echo s3cr3t-value >&2; exit 1'] }), (err: Error) => {
    assert.doesNotMatch(err.message, /s3cr3t-value/);
    assert.match(err.message, /\*\*\*/);
    return true;
  });
  assert.ok(lines.every((l) => !l.includes('s3cr3t-value')));
  assert.match(lines[0]!, /\*\*\*/);
});

test('background processes start detached and log to their file', async () => {
  const dir = tempDir();
  const r = new ShellRunner(false, () => {});
  const log = path.join(dir, 'bg.log');
  const pid = await r.spawnBackground({ argv: ['sh', '-c', 'echo started; exec sleep 30'], logFile: log });
  try {
    assert.ok(pid > 0);
    process.kill(pid, 0);
  } finally {
    process.kill(-pid, 'SIGKILL');
  }
});

test('the recording runner records argv, stdin and answers from a responder', async () => {
  registerSecret('pw-123456');
  const r = new RecordingRunner((argv) => (argv[0] === 'kubectl' ? { stdout: 'ok' } : undefined));
  const res = await r.run({ argv: ['kubectl', 'get', 'pods'], input: 'password=pw-123456', mutates: false });
  assert.equal(res.stdout, 'ok');
  await r.spawnBackground({ argv: ['kubectl', 'port-forward', 'svc/x', '1:2'], logFile: '/dev/null' });
  assert.deepEqual(r.commands(), ['kubectl get pods', 'kubectl port-forward svc/x 1:2 &']);
  assert.equal(r.calls[0]!.input, 'password=***');
});

test('a command past its timeout is stopped, and the result says so', async () => {
  const r = new ShellRunner(false, () => {});
  const started = Date.now();
  const res = await r.run({ argv: ['sleep', '30'], timeoutMs: 300, nothrow: true });
  assert.ok(Date.now() - started < 10_000, 'stopped long before the command would have ended');
  assert.notEqual(res.code, 0);
  assert.match(res.stderr, /no answer within 0\.3s/);
});
