// The image's Google Cloud CLI without Google's apt repository (lib/kube/gcloud-sdk.ts): found as
// the gcloud on PATH, an SDK root or an SDK archive (GCLOUD_SDK); only its core is staged into the
// build context; an SDK that cannot run in the image is refused naming the fix.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { UserError } from '../../lib/errors.ts';
import { checkedRoot, gcloudSdkSource, sdkPathKept, stageGcloudSdk } from '../../lib/kube/gcloud-sdk.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { fakeSdk } from '../helpers/fake-sdk.ts';
import { tempDir, testConfig } from '../helpers/fixtures.ts';

const runner = new ShellRunner(false, () => {});
const cfg = (vars: Record<string, string> = {}) => testConfig({ DIGDAG_HA_TARGET: 'cluster', ...vars });

function refused(fn: () => unknown, want: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof UserError, String(err));
    assert.match(err.message, want);
    assert.match(err.fix ?? '', /GCLOUD_SDK[\s\S]*INSTALL_GCLOUD=false/);
    return true;
  });
}

test('the gcloud on PATH: its SDK root through the links; none on PATH is refused naming GCLOUD_SDK and INSTALL_GCLOUD=false', () => {
  const root = fakeSdk();
  const bin = tempDir('path-');
  fs.symlinkSync(path.join(root, 'bin', 'gcloud'), path.join(bin, 'gcloud'));
  const src = gcloudSdkSource(cfg(), `/nonexistent:${bin}`);
  assert.deepEqual(src, { kind: 'dir', path: fs.realpathSync(root), from: `the gcloud on PATH (${fs.realpathSync(root)})` });
  refused(() => gcloudSdkSource(cfg(), tempDir('empty-path-')), /no gcloud on PATH and GCLOUD_SDK is empty/);
});

test('GCLOUD_SDK: a root or an archive; refused when absent, not an SDK, not an archive, or without a Linux x86_64 Python', () => {
  const root = fakeSdk();
  assert.equal(gcloudSdkSource(cfg({ GCLOUD_SDK: root })).kind, 'dir');
  const tgz = path.join(tempDir('archive-'), 'google-cloud-cli-528.0.0-linux-x86_64.tar.gz');
  assert.equal(spawnSync('tar', ['-czf', tgz, '-C', path.dirname(root), 'google-cloud-sdk']).status, 0);
  assert.equal(gcloudSdkSource(cfg({ GCLOUD_SDK: tgz })).kind, 'archive');
  refused(() => gcloudSdkSource(cfg({ GCLOUD_SDK: path.join(root, 'absent') })), /does not exist/);
  refused(() => gcloudSdkSource(cfg({ GCLOUD_SDK: path.join(root, 'lib') })), /is not a Google Cloud SDK root/);
  refused(() => gcloudSdkSource(cfg({ GCLOUD_SDK: path.join(root, 'VERSION') })), /neither a directory nor a \.tar\.gz archive/);
  for (const python of ['macos', 'linux-arm64', 'none'] as const) {
    refused(() => gcloudSdkSource(cfg({ GCLOUD_SDK: fakeSdk(python) })), /has no bundled Python for Linux x86_64/);
  }
});

test('staging: only the core (gcloud, bq, libraries, bundled Python) with settings of its own, from a root or an archive; a broken archive is refused', async () => {
  const root = fakeSdk();
  const tgz = path.join(tempDir('archive-'), 'sdk.tar.gz');
  assert.equal(spawnSync('tar', ['-czf', tgz, '-C', path.dirname(root), 'google-cloud-sdk']).status, 0);
  for (const source of [root, tgz]) {
    const config = cfg({ GCLOUD_SDK: source });
    const dest = path.join(tempDir('context-'), 'google-cloud-sdk');
    assert.match(await stageGcloudSdk(runner, config, gcloudSdkSource(config), dest), /^Google Cloud CLI 528\.0\.0 from GCLOUD_SDK=/);
    for (const f of ['bin/gcloud', 'bin/bq', 'bin/bootstrapping/bq.py', 'lib/googlecloudsdk/__init__.py', 'platform/bq/bq.py', 'platform/bundledpythonunix/bin/python3.12']) assert.ok(fs.existsSync(path.join(dest, f)), `${source}: ${f}`);
    assert.equal(fs.readlinkSync(path.join(dest, 'platform/bundledpythonunix/bin/python3')), 'python3.12', 'links stay links');
    assert.equal(fs.statSync(path.join(dest, 'bin/gcloud')).mode & 0o111, 0o111, 'executables stay executable');
    assert.ok(fs.existsSync(path.join(dest, '.install/core.manifest')), 'the core\'s component record');
    for (const f of ['bin/kubectl', 'platform/pubsub-emulator', '.install/kubectl.manifest']) assert.ok(!fs.existsSync(path.join(dest, f)), `${source}: ${f} left out`);
    assert.doesNotMatch(fs.readFileSync(path.join(dest, 'properties'), 'utf8'), /account/, 'not the installation\'s own settings');
    assert.match(fs.readFileSync(path.join(dest, 'properties'), 'utf8'), /disable_update_check = True/);
    assert.ok(!fs.existsSync(path.join(config.stateDir, 'gcloud-sdk-archive')), 'the unpacked archive is removed');
  }
  const broken = path.join(tempDir('archive-'), 'broken.tar.gz');
  fs.writeFileSync(broken, 'not gzip');
  const config = cfg({ GCLOUD_SDK: broken });
  await assert.rejects(stageGcloudSdk(runner, config, gcloudSdkSource(config), path.join(tempDir('context-'), 'sdk')), /could not be unpacked/);
});

test('the SDK installed on this machine (gcloud 528 under /usr/lib/google-cloud-sdk) is one the image can take', (t) => {
  const root = '/usr/lib/google-cloud-sdk';
  if (!fs.existsSync(path.join(root, 'bin', 'gcloud'))) return t.skip(`SKIPPED — no SDK at ${root} on this machine`);
  assert.equal(checkedRoot(root, root).kind, 'dir');
});

test('trimmed: only the API clients the image\'s CLIs use (gcloud auth/config/storage and its error handler, bq, gsutil), no Kubernetes client; botocore kept (gcloud storage loads it)', () => {
  const apis = 'lib/googlecloudsdk/generated_clients/apis';
  for (const kept of ['lib/googlecloudsdk/core', `${apis}/bigquery`, `${apis}/storage/v1/storage_v1_client.py`, `${apis}/clouderrorreporting`, `${apis}/apis_map.py`, `${apis}/__init__.py`, 'lib/third_party/google', 'lib/third_party/botocore']) assert.ok(sdkPathKept(kept), kept);
  for (const out of [`${apis}/compute`, `${apis}/container`, 'lib/third_party/kubernetes']) assert.equal(sdkPathKept(out), false, out);
});
