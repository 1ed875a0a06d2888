// The Google Cloud CLI (gcloud, bq, gsutil) for the Digdag image without Google's apt repository:
// build-image puts the core of an installed SDK (the gcloud on PATH, or GCLOUD_SDK's root) or of
// an SDK archive the user names into the build context; the Dockerfile copies it to
// /usr/lib/google-cloud-sdk. An offline or air-gapped build has it as long as this machine does.
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config.ts';
import { UserError } from '../errors.ts';
import type { Runner } from '../runner.ts';

/** Where build-image puts the SDK in the context (the Dockerfile copies it to /usr/lib/google-cloud-sdk). */
export const GCLOUD_SDK_CONTEXT_DIR = 'google-cloud-sdk';

/** What of an SDK goes into the image: gcloud, bq and gsutil with their libraries and the bundled
 * Python (the base image need not have one). Not the emulators, kubectl builds, App Engine or
 * other components (they triple the size), and never the SDK's configuration or credentials. */
export const SDK_PARTS: readonly string[] = [
  'VERSION', 'bin/gcloud', 'bin/bq', 'bin/gsutil', 'bin/gcloud-crc32c', 'bin/bootstrapping', 'bin/docker-credential-gcloud', 'bin/git-credential-gcloud.sh',
  'lib', 'data', 'platform/bq', 'platform/gsutil', 'platform/bundledpythonunix', 'platform/gcloud-crc32c_licenses', '.install',
];

/** Left out of lib/ (measured on SDK 528: ~200 of ~705 MB, a smaller image to save, import and
 * start): the clients of APIs other than those the image's CLIs use (gcloud auth/config/storage,
 * bq, gsutil; clouderrorreporting: gcloud's error handler loads it) and the Kubernetes client
 * (`gcloud container`/`run`). botocore stays: `gcloud storage` loads it for every command. */
export const SDK_KEPT_APIS = ['bigquery', 'storage', 'iam', 'iamcredentials', 'cloudresourcemanager', 'serviceusage', 'clouderrorreporting'];
const APIS_DIR = 'lib/googlecloudsdk/generated_clients/apis';
const LEFT_OUT = new Set(['lib/third_party/kubernetes']);
export function sdkPathKept(rel: string): boolean {
  if (LEFT_OUT.has(rel)) return false;
  if (!rel.startsWith(`${APIS_DIR}/`)) return true;
  const name = rel.slice(APIS_DIR.length + 1);
  return name.includes('/') || SDK_KEPT_APIS.includes(name) || /\.py$|^__pycache__$/.test(name);
}

/** The component records (.install) of what is copied, so `gcloud components list` tells the truth. */
const KEPT_COMPONENTS = /^((alpha|beta|preview|gcloud|core|bq|gsutil)(-nix)?|(bundled-python3-unix|gcloud-crc32c|gcloud-deps)(-linux-x86_64)?)\.(manifest|snapshot\.json)$|^(command|component)_mapping\.yaml$/;

/** The installation's own properties in the image: no usage reports, no update checks. */
export const SDK_PROPERTIES = '[core]\ndisable_usage_reporting = True\n\n[component_manager]\ndisable_update_check = True\n';

const BUNDLED_PYTHON = 'platform/bundledpythonunix/bin/python3';

export interface SdkSource {
  kind: 'dir' | 'archive';
  /** The SDK's root directory, or the archive. */
  path: string;
  /** Where it came from, for messages. */
  from: string;
}

const fix = 'set GCLOUD_SDK to an SDK archive for Linux x86_64 (google-cloud-cli-<version>-linux-x86_64.tar.gz, https://cloud.google.com/sdk/docs/install) or to an installed Linux SDK\'s root (e.g. /usr/lib/google-cloud-sdk), or INSTALL_GCLOUD=false for an image without gcloud and bq';

/** The gcloud on PATH, resolved through its links (/usr/bin/gcloud → /usr/lib/google-cloud-sdk/bin/gcloud). */
function gcloudOnPath(envPath = process.env.PATH ?? ''): string | undefined {
  for (const dir of envPath.split(path.delimiter).filter(Boolean)) {
    const f = path.join(dir, 'gcloud');
    try {
      fs.accessSync(f, fs.constants.X_OK);
      return fs.realpathSync(f);
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Where the image's SDK comes from (INSTALL_GCLOUD=true); refused with the fix when there is none. */
export function gcloudSdkSource(config: Config, envPath?: string): SdkSource {
  const given = config.k8s.gcloudSdk;
  if (given) {
    if (!fs.existsSync(given)) throw new UserError(`GCLOUD_SDK=${given} does not exist`, fix);
    if (fs.statSync(given).isDirectory()) return checkedRoot(given, `GCLOUD_SDK=${given}`);
    if (!/\.(tar\.gz|tgz)$/.test(given)) throw new UserError(`GCLOUD_SDK=${given} is neither a directory nor a .tar.gz archive`, fix);
    return { kind: 'archive', path: given, from: `GCLOUD_SDK=${given}` };
  }
  const gcloud = gcloudOnPath(envPath);
  if (!gcloud || path.basename(path.dirname(gcloud)) !== 'bin') {
    throw new UserError('INSTALL_GCLOUD=true, but there is no Google Cloud SDK to put into the image: no gcloud on PATH and GCLOUD_SDK is empty', fix);
  }
  const root = path.dirname(path.dirname(gcloud));
  return checkedRoot(root, `the gcloud on PATH (${root})`);
}

/** An SDK root: gcloud's libraries and a bundled Python for Linux x86_64 (what runs in the image). */
export function checkedRoot(root: string, from: string): SdkSource {
  if (!fs.existsSync(path.join(root, 'bin', 'gcloud')) || !fs.existsSync(path.join(root, 'lib', 'googlecloudsdk'))) {
    throw new UserError(`${from} is not a Google Cloud SDK root (no bin/gcloud and lib/googlecloudsdk there)`, fix);
  }
  const py = path.join(root, BUNDLED_PYTHON);
  let head = Buffer.alloc(0);
  try {
    const fd = fs.openSync(fs.realpathSync(py), 'r');
    head = Buffer.alloc(20);
    fs.readSync(fd, head, 0, 20, 0);
    fs.closeSync(fd);
  } catch {
    // no bundled Python
  }
  // ELF, 64-bit, machine x86-64 (0x3e): the image's platform.
  if (!(head.length === 20 && head.readUInt32BE(0) === 0x7f454c46 && head[4] === 2 && head.readUInt16LE(18) === 0x3e)) {
    throw new UserError(`${from} has no bundled Python for Linux x86_64 (${BUNDLED_PYTHON}): it is an SDK for another platform, or a distribution package without it, and the image has no Python of its own`, fix);
  }
  return { kind: 'dir', path: root, from };
}

/** The SDK's version (its VERSION file), or the archive's name and size: a changed SDK rebuilds the image. */
export function sdkIdentity(src: SdkSource): string {
  if (src.kind === 'archive') return `${path.basename(src.path)} ${fs.statSync(src.path).size} ${fs.statSync(src.path).mtimeMs}`;
  return fs.readFileSync(path.join(src.path, 'VERSION'), 'utf8').trim();
}

/** Links (or copies, across file systems) a file tree; symbolic links stay links. `rel`: the
 * tree's path in the SDK, for sdkPathKept. */
function linkTree(src: string, dst: string, rel: string, keep: (name: string) => boolean = () => true): void {
  const st = fs.lstatSync(src);
  if (st.isSymbolicLink()) {
    fs.symlinkSync(fs.readlinkSync(src), dst);
  } else if (st.isDirectory()) {
    fs.mkdirSync(dst, { recursive: true, mode: 0o755 });
    for (const e of fs.readdirSync(src).filter(keep)) {
      if (sdkPathKept(`${rel}/${e}`)) linkTree(path.join(src, e), path.join(dst, e), `${rel}/${e}`);
    }
  } else if (st.isFile()) {
    try {
      fs.linkSync(src, dst);
    } catch {
      fs.copyFileSync(src, dst);
      fs.chmodSync(dst, st.mode & 0o777);
    }
  }
}

/** Puts the SDK's core (SDK_PARTS) into `dest` of the build context; returns what it did. */
export async function stageGcloudSdk(runner: Runner, config: Config, src: SdkSource, dest: string): Promise<string> {
  let root = src.path;
  let unpacked: string | undefined;
  if (src.kind === 'archive') {
    unpacked = path.join(config.stateDir, 'gcloud-sdk-archive');
    fs.rmSync(unpacked, { recursive: true, force: true });
    fs.mkdirSync(unpacked, { recursive: true, mode: 0o700 });
    const r = await runner.run({ argv: ['tar', '-xzf', src.path, '-C', unpacked], nothrow: true, quiet: true, timeoutMs: 10 * 60_000 });
    if (r.code !== 0) {
      fs.rmSync(unpacked, { recursive: true, force: true });
      throw new UserError(`GCLOUD_SDK=${src.path} could not be unpacked: ${r.stderr.trim().split('\n').slice(-2).join(' ')}`, fix);
    }
    root = path.join(unpacked, 'google-cloud-sdk');
  }
  try {
    checkedRoot(root, src.from);
    fs.mkdirSync(dest, { recursive: true, mode: 0o755 });
    for (const part of SDK_PARTS) {
      const from = path.join(root, part);
      if (!fs.existsSync(from)) continue;
      fs.mkdirSync(path.dirname(path.join(dest, part)), { recursive: true, mode: 0o755 });
      linkTree(from, path.join(dest, part), part, part === '.install' ? (name) => KEPT_COMPONENTS.test(name) : undefined);
    }
    fs.writeFileSync(path.join(dest, 'properties'), SDK_PROPERTIES, { mode: 0o644 });
    return `Google Cloud CLI ${fs.readFileSync(path.join(root, 'VERSION'), 'utf8').trim()} from ${src.from}`;
  } finally {
    if (unpacked) fs.rmSync(unpacked, { recursive: true, force: true });
  }
}
