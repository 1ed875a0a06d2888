// The replica arithmetic KEDA applies to the queue depth.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { desiredAgents, QUEUE_DEPTH_SQL } from '../../lib/scaling.ts';

test('desired agents = ceil(queue depth / threads), clamped to min and max', () => {
  assert.equal(desiredAgents(0, 4), 1);
  assert.equal(desiredAgents(4, 4), 1);
  assert.equal(desiredAgents(5, 4), 2);
  assert.equal(desiredAgents(7, 2), 4);
  assert.equal(desiredAgents(100, 4, 1, 10), 10);
  assert.equal(desiredAgents(0, 4, 0), 0);
});

test('the query counts waiting and running tasks alike', () => {
  assert.equal(QUEUE_DEPTH_SQL, 'SELECT count(*) FROM queued_task_locks');
  assert.doesNotMatch(QUEUE_DEPTH_SQL, /lock_expire_time/);
});
