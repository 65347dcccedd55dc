/**
 * Handing a port's new connections from one set of listening sockets to another without losing
 * any: the listeners of a `SO_REUSEPORT` group that are about to close (a reload's retired
 * workers, the process being replaced) are first given no new connections, then closed once
 * their accept queues are empty.
 *
 * Why: Linux resets the connections waiting in a listener's accept queue when it closes, unless
 * `net.ipv4.tcp_migrate_req` is 1 (Linux 5.14+, per network namespace; it moves them to another
 * listener of the group). Here the group gets a classic BPF program (`libc.ts`) that sends every
 * new connection to the newcomers' sockets, which the kernel keeps after the others in the
 * group's order; the old listeners keep accepting what they already have, and close with an
 * empty queue. It needs `--allow-ffi` and glibc on Linux; without them the old listeners close
 * at once, and only the sysctl saves what waits in their queues.
 *
 * The closing itself needs care: the kernel fills the place of a closed socket with the group's
 * last one, so the newcomers' places change as the old listeners close one by one, and an index
 * past the end makes the kernel fall back to its hash, which may pick an old listener that has
 * not closed yet. Measured here: about one connection reset per two reloads under a client loop,
 * with the old listeners closing in the same millisecond. So while they close, every new
 * connection goes to the first newcomer, whose place only changes at the last close (when no
 * old listener is left); then the program is taken away.
 *
 * Limits: the group's size is the count of listening sockets on the port, whatever their
 * address (the kernel's `sock_diag`, as `ss -l` asks it), and the newcomers' place in the group is inferred from it; a
 * listener that joins or leaves between the count and the program (a worker that dies just then)
 * makes the program steer some connections to the wrong socket, which is no worse than without
 * it. A connection whose handshake began before the program and is not finished when its
 * listener closes (a client more than `MAX_QUEUE_WAIT_MS` away) is still lost.
 *
 * Runs on the main thread only (socket descriptors are the process's, whichever thread uses them).
 *
 * @module
 */

import {
  acceptQueueLength,
  canSteer,
  listenersOf,
  portListeners,
  refuseNewConnections,
  steerGroup,
  unsteerGroup,
} from "../sockets/libc.ts";

/** After steering, wait at least this long for handshakes begun before it to complete. */
const MIN_QUEUE_WAIT_MS = 100;
/** Most time to wait for old accept queues to empty before closing them anyway. */
const MAX_QUEUE_WAIT_MS = 2000;
const POLL_MS = 10;
/** How soon a process that took over a port first checks whether the old one has gone. */
const WATCH_MS = 250;
/** How seldom it checks at most. */
const MAX_WATCH_MS = 4000;

/**
 * Listening TCP sockets on `port` in this network namespace, of any process and any address
 * (`sock_diag`, see `libc.ts`).
 *
 * @param port The port.
 * @returns The count, or undefined where it cannot be read.
 */
export function listenersOnPort(port: number): number | undefined {
  const found = portListeners(port);
  return found === undefined ? undefined : found.ipv4 + found.ipv6;
}

/** The port's group as it was before new listeners joined it. */
export class ReuseportGroup {
  /** The port. */
  readonly port: number;
  /** Listening sockets on the port before the newcomers joined: their first index. */
  readonly before: number;
  /** This process's listening sockets on the port before the newcomers joined. */
  readonly ours: number[];
  /** The address the listeners there use: `::` if any is IPv6 (dual-stack), else `0.0.0.0`. */
  readonly address: string;

  private constructor(port: number, before: number, ours: number[], address: string) {
    this.port = port;
    this.before = before;
    this.ours = ours;
    this.address = address;
  }

  /**
   * Takes stock of the port's group before new listeners join it.
   *
   * @param port The port.
   * @param ours How many of this process's listeners to look for (the ones that will close).
   * @returns The stock, or undefined where steering is unavailable.
   */
  static capture(port: number, ours: number): ReuseportGroup | undefined {
    if (!canSteer()) return undefined;
    const found = portListeners(port);
    if (found === undefined) return undefined;
    return new ReuseportGroup(
      port,
      found.ipv4 + found.ipv6,
      ours > 0 ? listenersOf(port, ours) : [],
      found.ipv6 > 0 ? "::" : "0.0.0.0",
    );
  }

  /**
   * Sends every new connection to the `count` listeners that joined since {@linkcode capture},
   * if the group is as expected (nothing else joined or left meanwhile).
   *
   * @param count How many joined.
   * @returns Whether the group is steered.
   */
  steerToNewcomers(count: number): boolean {
    if (listenersOnPort(this.port) !== this.before + count) return false;
    const any = this.ours[0] ?? listenersOf(this.port, 1)[0];
    return any !== undefined && steerGroup(any, this.before, count);
  }

  /**
   * Waits until this process's listeners found by {@linkcode capture} have no connection in
   * their accept queues (and at least a short while, for handshakes already under way), or
   * `MAX_QUEUE_WAIT_MS`.
   *
   * @returns Connections still queued when it stopped waiting.
   */
  async waitForEmptyQueues(): Promise<number> {
    return await waitForEmptyQueues(this.ours, MIN_QUEUE_WAIT_MS);
  }

  /**
   * Sends every new connection to the first newcomer: its place in the group stays the same
   * while the old listeners close one by one (see the module's documentation). Call it just
   * before they close, after {@linkcode steerToNewcomers}.
   *
   * @returns Whether the program was attached.
   */
  pinToFirstNewcomer(): boolean {
    const any = this.ours[0] ?? listenersOf(this.port, 1)[0];
    return any !== undefined && steerGroup(any, this.before, 1);
  }

  /**
   * Waits until this process's listeners found by {@linkcode capture} have closed (or
   * `MAX_QUEUE_WAIT_MS`), then takes the program away: the kernel's hash spreads connections
   * over the newcomers again.
   */
  async release(): Promise<void> {
    const start = performance.now();
    while (
      this.ours.some((fd) => acceptQueueLength(fd) !== undefined) &&
      performance.now() - start < MAX_QUEUE_WAIT_MS
    ) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    const any = listenersOf(this.port, 1)[0];
    if (any !== undefined) unsteerGroup(any);
  }
}

/**
 * Waits until the given listeners have no connection waiting in their accept queues, or
 * `MAX_QUEUE_WAIT_MS` pass.
 *
 * @param fds Listening sockets' descriptors.
 * @param atLeast Milliseconds to wait in any case.
 * @returns Connections still queued when it stopped waiting.
 */
export async function waitForEmptyQueues(fds: number[], atLeast = 0): Promise<number> {
  const start = performance.now();
  for (;;) {
    const queued = fds.reduce((sum, fd) => sum + (acceptQueueLength(fd) ?? 0), 0);
    const waited = performance.now() - start;
    if ((queued === 0 && waited >= atLeast) || waited >= MAX_QUEUE_WAIT_MS) return queued;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/**
 * Before this process closes its listeners while a successor shares the port (a hand-over):
 * sends every new connection to the successor's first listener, whose place stays the same
 * while these close one by one (see the module's documentation), and waits until these have
 * nothing queued. It assumes this process's listeners come first in the group, as they do
 * when it started first or its own predecessor has gone: one hand-over at a time.
 *
 * @param port The port.
 * @param ours This process's listeners' descriptors.
 * @returns Whether a successor shares the port (false if not, or if it cannot be told).
 */
export async function handOffBeforeClosing(port: number, ours: number[]): Promise<boolean> {
  const all = listenersOnPort(port);
  if (all === undefined || all <= ours.length || ours.length === 0) return false;
  // If the successor has fewer listeners than this process, the kernel's hash may still pick
  // one of these as they close; the successor's own steering and tcp_migrate_req cover it.
  steerGroup(ours[0]!, ours.length, 1);
  await waitForEmptyQueues(ours, MIN_QUEUE_WAIT_MS);
  return true;
}

/**
 * Before a stop closes this process's listeners (no successor on the port): they refuse new
 * connections from now on (see `refuseNewConnections`), and the connections already queued are
 * left to be accepted, so that they are served and drained instead of reset by the close.
 *
 * @param ours This process's listeners' descriptors (whoever accepts from them keeps doing so).
 * @returns Connections still queued when it stopped waiting (the close resets them), or
 *   undefined where the queues cannot be seen (no `--allow-ffi`, not Linux).
 */
export async function emptyQueuesBeforeClosing(ours: number[]): Promise<number | undefined> {
  if (ours.length === 0 || !canSteer()) return undefined;
  for (const fd of ours) refuseNewConnections(fd);
  return await waitForEmptyQueues(ours, MIN_QUEUE_WAIT_MS);
}

/**
 * Once the group's other listeners are gone (the old process has stopped), takes the program
 * away so that the kernel's hash spreads connections evenly again. Checks soon, then less and
 * less often: an old process left running is looked at every few seconds, not four times one.
 *
 * @param port The port.
 * @param ours How many listeners this process has on it.
 * @returns Stops watching.
 */
export function unsteerWhenAlone(port: number, ours: number): () => void {
  let wait = WATCH_MS;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const check = () => {
    if (listenersOnPort(port) === ours) {
      const any = listenersOf(port, 1)[0];
      if (any !== undefined) unsteerGroup(any);
      return;
    }
    wait = Math.min(wait * 2, MAX_WATCH_MS);
    timer = setTimeout(check, wait);
    Deno.unrefTimer(timer);
  };
  timer = setTimeout(check, wait);
  Deno.unrefTimer(timer);
  return () => clearTimeout(timer);
}
