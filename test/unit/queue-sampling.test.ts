// The burst sampling (lib/queue-sampling.ts): the lock table's rows, counts per sample, the pace
// and the left-out samples of the loop, and what a burst's samples show — re-runs, retries, and
// the scale-out's steps measured from the burst; the Kubernetes source's lock-table query.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pollingDbQuery } from '../../lib/kube/db-query.ts';
import { LOCK_LOG_INSTALL_SQL, parseLockLog } from '../../lib/lock-log.ts';
import { waitFor } from '../../lib/processes.ts';
import { burstFigures, parseLocks, sampleQueue, startSampling, type QueueSample, type QueueSource, type WorkerInstance } from '../../lib/queue-sampling.ts';
import { RecordingRunner } from '../../lib/runner.ts';
import { testConfig, testCtx } from '../helpers/fixtures.ts';

const podOf = (agent: string) => agent.slice(agent.indexOf('@') + 1);

test('lock rows: waiting (no agent) or held, with the instance from the agent id and the retries', () => {
  assert.deepEqual(parseLocks('11||0\n12|1@digdag-worker-a|0\n\n13|7@digdag-worker-b|2\n', podOf), [
    { id: '11', agent: '', instance: '', retries: 0 },
    { id: '12', agent: '1@digdag-worker-a', instance: 'digdag-worker-a', retries: 0 },
    { id: '13', agent: '7@digdag-worker-b', instance: 'digdag-worker-b', retries: 2 },
  ]);
  assert.deepEqual(parseLocks('', podOf), []);
});

const source = (workers: () => WorkerInstance[], rows: () => string): QueueSource => ({
  workers: async () => workers(),
  query: async (sql) => {
    assert.match(sql, /FROM queued_task_locks/);
    return rows();
  },
  instanceOfAgent: podOf,
});

test('a sample counts live, ready and terminating instances, waiting and running tasks', async () => {
  const s = await sampleQueue(source(
    () => [{ name: 'a', ready: true, terminating: false }, { name: 'b', ready: false, terminating: false }, { name: 'c', ready: true, terminating: true }],
    () => '1||0\n2||0\n3|1@a|0',
  ));
  assert.deepEqual([s.replicas, s.ready, s.terminating, s.waiting, s.running], [2, 1, 1, 2, 1]);
  await assert.rejects(sampleQueue(source(() => [], () => { throw new Error('psql: could not connect\nmore'); })), /could not connect/);
});

test('sampling: paced, a failed read left out (not read as an empty queue), stop ends the loop', async () => {
  let n = 0;
  const sampling = startSampling(source(() => [{ name: 'a', ready: true, terminating: false }], () => {
    n++;
    if (n === 2) throw new Error('database busy');
    return '1|1@a|0';
  }), { everyMs: 20 });
  const t0 = Date.now();
  assert.ok(await waitFor(() => n >= 5, 10_000, 5));
  const samples = await sampling.stop();
  const reads = n;
  assert.ok(Date.now() - t0 >= 3 * 20, 'paced at one read per 20 ms (the failed one waits 1 s)');
  assert.equal(samples.length, reads - 1);
  assert.deepEqual(sampling.failures, ['database busy']);
  assert.ok(samples.every((s) => s.running === 1));
  // A window of two paces after stop: a loop still running would read again in it.
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(n, reads, 'no read after stop');
});

const w = (name: string, ready = true, terminating = false): WorkerInstance => ({ name, ready, terminating });
const at = (sec: number, workers: WorkerInstance[], locks: [string, string, number?][]): QueueSample => {
  const l = locks.map(([id, agent, retries = 0]) => ({ id, agent, instance: agent ? podOf(agent) : '', retries }));
  const live = workers.filter((x) => !x.terminating);
  return { at: 1_000_000 + sec * 1000, workers, replicas: live.length, ready: live.filter((x) => x.ready).length, terminating: workers.length - live.length, waiting: l.filter((x) => !x.agent).length, running: l.filter((x) => x.agent).length, locks: l };
};

test('a burst: the scale-out step by step from the burst, the reaction, and no re-run', () => {
  const burstAt = 1_000_000 + 10_000;
  const queue = (n: number, agent: string) => Array.from({ length: n }, (_, i) => [`t${i}`, i < 4 ? agent : ''] as [string, string]);
  const f = burstFigures([
    at(9, [w('a')], []),
    at(11, [w('a')], queue(3, '1@a')),
    at(13, [w('a')], queue(12, '1@a')), // above 4 at +3 s
    at(20, [w('a'), w('b', false)], queue(12, '1@a')), // a pod asked for at +10 s
    at(40, [w('a'), w('b')], queue(12, '1@a')), // Ready at +30 s
    at(45, [w('a'), w('b')], [['t0', '1@a'], ['t9', '1@b']]), // its first task at +35 s
    at(90, [w('a'), w('b', true, true)], []),
  ], burstAt, 4);
  assert.deepEqual([f.overThresholdMs, f.scaledOutMs, f.newReadyMs, f.newWorkerTaskMs, f.reactionMs], [3000, 10_000, 30_000, 35_000, 32_000]);
  assert.deepEqual([f.samples, f.peak, f.locksSeen, f.reruns, f.retried], [7, 2, 5, [], 0]);
});

test('a task held by two agents, or retried, is a re-run; fixed workers show no scale-out', () => {
  const f = burstFigures([
    at(0, [w('a'), w('b')], []),
    at(2, [w('a'), w('b')], [['t1', '1@a'], ['t2', '1@b', 1]]),
    at(4, [w('a'), w('b')], [['t1', '1@b'], ['t2', '1@b', 1]]),
  ], 1_000_000 + 1000, 8);
  assert.deepEqual(f.reruns, ['t1: 1@a, 1@b']);
  assert.equal(f.retried, 1, 'one task, however many samples saw it');
  assert.deepEqual([f.overThresholdMs, f.scaledOutMs, f.newReadyMs, f.newWorkerTaskMs, f.reactionMs], [undefined, undefined, undefined, undefined, undefined]);
});

test('the polling query on Kubernetes finds the PostgreSQL leader once, keeps it, and looks again after a failed query', async () => {
  let leader = 'digdag-postgres-1';
  let down = '';
  const runner = new RecordingRunner((argv) => {
    if (argv.includes('get')) return { stdout: leader };
    const pod = argv[argv.indexOf('exec') + 1];
    return pod === down ? { code: 1, stderr: `pod ${pod} is gone` } : { stdout: `rows from ${pod}\n` };
  });
  const query = pollingDbQuery(testCtx(testConfig({ DIGDAG_HA_TARGET: 'cluster', POSTGRES_MEMBERS: '3' }), runner));
  const kinds = () => runner.calls.map((c) => (c.argv.includes('get') ? 'find leader' : `exec ${c.argv[c.argv.indexOf('exec') + 1]}`));
  assert.equal(await query('SELECT 1'), 'rows from digdag-postgres-1');
  assert.equal(await query('SELECT 1'), 'rows from digdag-postgres-1');
  assert.deepEqual(kinds(), ['find leader', 'exec digdag-postgres-1', 'exec digdag-postgres-1'], 'one exec per query once the leader is known');
  // A failover: the old leader's pod fails the query; the new one is found and asked.
  down = 'digdag-postgres-1';
  leader = 'digdag-postgres-2';
  assert.equal(await query('SELECT 1'), 'rows from digdag-postgres-2');
  assert.deepEqual(kinds().slice(3), ['exec digdag-postgres-1', 'find leader', 'exec digdag-postgres-2']);
  // When the leader found again fails too, the query fails (the sampling leaves that sample out).
  down = 'digdag-postgres-2';
  await assert.rejects(query('SELECT 1'), /digdag-postgres-2 is gone/);
});

test('the lock log: a lock taken twice is a re-run, a retry counted is one taken again after it expired', () => {
  const log = parseLockLog('11|1@digdag-worker-a|0\n12|1@digdag-worker-a,7@digdag-worker-b|1\n13|2@digdag-worker-a|0\n');
  assert.equal(log.locks, 3);
  assert.deepEqual(log.reruns, ['12: 1@digdag-worker-a, 7@digdag-worker-b']);
  assert.deepEqual(log.retried, ['12']);
  assert.deepEqual(log.agentsOf.get('11'), ['1@digdag-worker-a']);
  assert.deepEqual(parseLockLog(''), { locks: 0, reruns: [], retried: [], agentsOf: new Map() });
  // Only acquisitions are logged: the trigger fires when lock_agent_id changes to an agent (not on
  // a heartbeat, which sets lock_expire_time alone, nor on an expiry, which clears the agent).
  assert.match(LOCK_LOG_INSTALL_SQL, /WHEN \(NEW\.lock_agent_id IS NOT NULL AND NEW\.lock_agent_id IS DISTINCT FROM OLD\.lock_agent_id\)/);
  assert.match(LOCK_LOG_INSTALL_SQL, /SECURITY DEFINER/, 'Digdag\'s own user needs no right on the log');
});
