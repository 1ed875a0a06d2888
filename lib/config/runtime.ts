// Config section Digdag runtime: where build-image gets Digdag and the Java it runs on.
import fs from 'node:fs';
import { UserError } from '../errors.ts';
import { bool, group, oneOf, str, type Values, type VarSpec } from './spec.ts';

export const RUNTIME_VARIABLES: readonly VarSpec[] = group('Digdag runtime', [
  { name: 'DIGDAG_SOURCE', default: 'maven', kind: oneOf(['maven', 'release', 'jar']),
    description: 'Where build-image gets Digdag: maven (io.digdag:digdag-cli + digdag-ui from MAVEN_REPO_URL, checksums verified), release (the GitHub release jar, sha256 pinned) or jar (DIGDAG_JAR).' },
  { name: 'MAVEN_REPO_URL', default: 'https://repo.maven.apache.org/maven2', kind: str('https://repo.maven.apache.org/maven2', /^(https?|file):\/\//),
    description: 'Maven repository (or mirror) holding the io.digdag artifacts.' },
  { name: 'DIGDAG_JAR', default: '', kind: str('/opt/digdag/digdag-0.10.5.1.jar'),
    description: 'With DIGDAG_SOURCE=jar: a Digdag fat jar already on disk (the release jar, or one you built).' },
  { name: 'DIGDAG_JAR_SHA256', default: '', kind: str('4d1337d7…', /^([0-9a-f]{64})?$/),
    description: 'sha256 that DIGDAG_JAR must have. Empty: the pinned checksum of the official 0.10.5.1 release jar.' },
  { name: 'JAVA_HOME', default: '', kind: str('/usr/lib/jvm/java-17-openjdk-amd64'),
    description: 'Java runtime for Digdag (11 or 17). Empty: java on PATH.' },
  { name: 'DIGDAG_JVM_OPTS', default: '-Xms64m -Xmx512m', kind: str('-Xmx1g'),
    description: 'Extra JVM options for every Digdag process (heap size). The Java 17 --add-opens flags are added for you.' },
  { name: 'DIGDAG_PATCHES', default: 'true', kind: bool,
    description: 'true: every Digdag server runs with digdag-ha\'s patches to Digdag (docker/digdag-patches): task callbacks that retry while the database is unavailable, so a task that finishes during a database failover does not fail its attempt, and an agent that takes the next tasks as soon as a thread is free and waits AGENT_POLL_MILLIS for tasks other processes queue; build-image compiles them (needs a JDK: javac). false: Digdag as released (such a task fails its attempt; agents poll every 1 s, a full one every 0.5 s).' },
]);

export interface DigdagConfig {
  readonly source: 'maven' | 'release' | 'jar';
  readonly mavenRepoUrl: string;
  readonly jar: string;
  readonly jarSha256: string;
  readonly javaHome: string;
  readonly jvmOpts: readonly string[];
  /** Run with digdag-ha's patches to Digdag (lib/digdag-patches.ts). */
  readonly patches: boolean;
}

export function runtimeConfig(v: Values): DigdagConfig {
  const source = v.str('DIGDAG_SOURCE') as DigdagConfig['source'];
  const jar = v.str('DIGDAG_JAR');
  if (source === 'jar' && !jar) throw new UserError('DIGDAG_SOURCE=jar needs DIGDAG_JAR', 'set DIGDAG_JAR=/path/to/digdag-0.10.5.1.jar');
  if (jar && source !== 'jar') throw new UserError('DIGDAG_JAR is set but DIGDAG_SOURCE is not jar', 'set DIGDAG_SOURCE=jar, or remove DIGDAG_JAR');
  if (jar && !fs.existsSync(v.path('DIGDAG_JAR'))) {
    throw new UserError(`DIGDAG_JAR=${jar} does not exist`, 'point DIGDAG_JAR at a Digdag jar, or use DIGDAG_SOURCE=maven');
  }
  return {
    source,
    mavenRepoUrl: v.str('MAVEN_REPO_URL').replace(/\/+$/, ''),
    jar: v.path('DIGDAG_JAR'),
    jarSha256: v.str('DIGDAG_JAR_SHA256'),
    javaHome: v.str('JAVA_HOME'),
    jvmOpts: v.str('DIGDAG_JVM_OPTS').split(/\s+/).filter(Boolean),
    patches: v.str('DIGDAG_PATCHES') === 'true',
  };
}
