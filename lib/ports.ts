// TCP ports on the loopback interface: is one free, when will it be, and which free ones to take.
import net from 'node:net';
import { UserError } from './errors.ts';
import { waitFor } from './processes.ts';

export async function isPortFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

/** Free now, or within a few seconds: a process that just died leaves /proc/<pid>/cmdline empty
 * — dead to isAlive — a moment before the kernel closes its sockets. */
export const portFreeSoon = (port: number, timeoutMs = 5000): Promise<boolean> => waitFor(() => isPortFree(port), timeoutMs, 100);

/** The first base (from `from`, in steps of `step`) with `n` consecutive free ports. */
export async function freePortRange(n: number, from: number, step = 50): Promise<number> {
  for (let base = from; base + n <= 65535; base += step) {
    if ((await Promise.all(Array.from({ length: n }, (_, i) => isPortFree(base + i)))).every(Boolean)) return base;
  }
  throw new UserError(`no ${n} consecutive free ports on 127.0.0.1 from ${from}`, 'stop what holds them');
}

/** A port the kernel says is free right now. */
export async function pickFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}
