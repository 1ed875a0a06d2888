// A small stand-in for an installed Google Cloud SDK (test only): the layout build-image copies
// from (bin/gcloud, lib/googlecloudsdk, a bundled Python) plus parts it must leave out.
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './fixtures.ts';

/** An ELF header of a 64-bit x86-64 executable (what checkedRoot reads), or another platform's. */
function header(kind: 'linux-x86_64' | 'macos' | 'linux-arm64'): Buffer {
  const b = Buffer.alloc(64);
  if (kind === 'macos') {
    b.writeUInt32BE(0xcffaedfe, 0);
    return b;
  }
  b.writeUInt32BE(0x7f454c46, 0);
  b[4] = 2;
  b.writeUInt16LE(kind === 'linux-x86_64' ? 0x3e : 0xb7, 18);
  return b;
}

/** The SDK root (google-cloud-sdk/ inside a temp dir, as the archive unpacks). */
export function fakeSdk(python: 'linux-x86_64' | 'macos' | 'linux-arm64' | 'none' = 'linux-x86_64'): string {
  const root = path.join(tempDir('fake-sdk-'), 'google-cloud-sdk');
  const put = (f: string, text: string | Buffer, mode = 0o644) => {
    fs.mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
    fs.writeFileSync(path.join(root, f), text, { mode });
  };
  put('VERSION', '528.0.0\n');
  put('bin/gcloud', '#!/bin/sh\necho gcloud\n', 0o755);
  put('bin/bq', '#!/bin/sh\necho bq\n', 0o755);
  put('bin/bootstrapping/bq.py', '# bq\n');
  put('lib/googlecloudsdk/__init__.py', '# sdk\n');
  put('platform/bq/bq.py', '# bq\n');
  if (python !== 'none') put('platform/bundledpythonunix/bin/python3.12', header(python), 0o755);
  if (python !== 'none') fs.symlinkSync('python3.12', path.join(root, 'platform/bundledpythonunix/bin/python3'));
  // Left out of the image: other components, and the installation's own settings.
  put('bin/kubectl', 'kubectl', 0o755);
  put('platform/pubsub-emulator/bin/emulator', 'emulator', 0o755);
  put('.install/core.manifest', 'bin/gcloud\n');
  put('.install/kubectl.manifest', 'bin/kubectl\n');
  put('properties', '[core]\naccount = someone@example.com\n');
  return root;
}
