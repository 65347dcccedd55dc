/**
 * Entry of a connection worker: serves the connections the main thread assigns to it.
 * All the logic is in `lib/worker/runtime.ts`.
 *
 * Runs inside a module Web Worker.
 *
 * @module
 */

import { runWorker, type WorkerScope } from "../lib/worker/runtime.ts";

runWorker(self as unknown as WorkerScope);
