/**
 * `--pid-file`: the process id written where `kill -USR2` (a rolling reload) and
 * `deno task reload` find it, and removed at exit.
 *
 * Runs on the main thread only.
 *
 * @module
 */

import { errorReason } from "../sockets/address.ts";

/**
 * Checks, before the server starts, that the pid file may be written. Asked, not tried: a write
 * without permission would prompt in a terminal.
 *
 * @param path The file.
 * @throws {Error} One line, if Deno's permissions do not allow writing it.
 */
export function checkPidFile(path: string): void {
  if (Deno.permissions.querySync({ name: "write", path }).state !== "granted") {
    throw new Error(
      `Cannot write the pid file ${path}: no permission to write it; run Deno with ` +
        `--allow-write=${path}`,
    );
  }
}

/**
 * Writes this process's id to `path`, and removes the file at exit unless another process (a
 * successor started on the same port) has written its own id there since. Write it once the
 * signals it is for are handled: SIGUSR2's default action ends a process.
 *
 * @param path The file.
 * @throws {Error} One line, if the file cannot be written.
 */
export function writePidFile(path: string): void {
  checkPidFile(path);
  const pid = String(Deno.pid);
  try {
    Deno.writeTextFileSync(path, pid + "\n");
  } catch (error) {
    throw new Error(`Cannot write the pid file ${path}: ${errorReason(error)}`, { cause: error });
  }
  const readable = Deno.permissions.querySync({ name: "read", path }).state === "granted";
  globalThis.addEventListener("unload", () => {
    try {
      if (!readable || Deno.readTextFileSync(path).trim() === pid) Deno.removeSync(path);
    } catch {
      // Gone already, or not ours to remove.
    }
  });
}
