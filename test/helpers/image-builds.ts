// A stand-in for the own cluster's dockerd while an add-on's images are built from cached binaries
// (lib/cluster/images.ts): no image there yet, each build's Dockerfile recorded, `docker save`
// writing its file. Shared by the add-on tests (KEDA, metrics-server).
import fs from 'node:fs';
import path from 'node:path';
import { RecordingRunner, type Result } from '../../lib/runner.ts';

/** Answers the image-build commands (recording each Dockerfile in `dockerfiles`); undefined for the rest. */
export function imageBuildAnswers(dockerfiles: string[]): (argv: readonly string[]) => Partial<Result> | undefined {
  return (argv) => {
    const a = argv.join(' ');
    if (a.includes(' image inspect ')) return { code: 1 };
    if (a.includes(' build ')) dockerfiles.push(fs.readFileSync(path.join(argv[argv.length - 1]!, 'Dockerfile'), 'utf8'));
    if (a.includes(' save -o ')) fs.writeFileSync(argv[argv.indexOf('-o') + 1]!, 'tar');
    return undefined;
  };
}

/** A RecordingRunner for an add-on's `up`: the image builds answered as above, the rest by `rest`. */
export function addonUpRunner(rest: (argv: readonly string[], joined: string) => Partial<Result> | undefined) {
  const dockerfiles: string[] = [];
  const images = imageBuildAnswers(dockerfiles);
  return { dockerfiles, runner: new RecordingRunner((argv) => images(argv) ?? rest(argv, argv.join(' '))) };
}
