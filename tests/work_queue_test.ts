import assert from "node:assert/strict";
import { JobError, WorkQueue } from "../lib/work_queue/work_queue.ts";
import type { TestJob } from "./fixtures/jobs_worker.ts";

const WORKER = new URL("./fixtures/jobs_worker.ts", import.meta.url);
const open = (options: { workers?: number; capacity?: number } = {}) =>
  new WorkQueue<TestJob, unknown>(WORKER, { workers: 2, ...options });
const tick = (ms = 20) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("WorkQueue.submit() resolves with each job's result", async () => {
  const queue = open();
  const results = await Promise.all(
    Array.from({ length: 20 }, (_, n) => queue.submit({ op: "square", n })),
  );
  assert.deepEqual(results, Array.from({ length: 20 }, (_, n) => n * n));
  await queue.close();
});

Deno.test("WorkQueue.submit() rejects with the job's error as cause", async () => {
  const queue = open();
  await assert.rejects(queue.submit({ op: "fail", message: "bad input 42" }), (error) => {
    assert.ok(error instanceof JobError);
    assert.match(error.message, /bad input 42/);
    assert.equal((error.cause as Error).name, "RangeError");
    assert.equal((error.cause as Error).message, "bad input 42");
    return true;
  });
  assert.equal(await queue.submit({ op: "square", n: 3 }), 9, "queue unusable after a failure");
  await queue.close();
});

Deno.test("WorkQueue is bounded: submitting to a full backlog waits for room", async () => {
  const queue = open({ workers: 1, capacity: 2 });
  const running = queue.submit({ op: "sleep", ms: 300 });
  await tick();
  const queued = [queue.submit({ op: "square", n: 1 }), queue.submit({ op: "square", n: 2 })];
  let admitted = false;
  const late = queue.submit({ op: "square", n: 3 }).then((r) => {
    admitted = true;
    return r;
  });
  await tick(100);
  assert.equal(queue.waiting, 2, "backlog grew past its capacity");
  assert.equal(admitted, false);
  assert.deepEqual(await Promise.all([running, ...queued, late]), ["slept", 1, 4, 9]);
  await queue.close();
});

Deno.test("WorkQueue: an AbortSignal cancels a waiting job and frees a running one", async () => {
  const queue = open({ workers: 1 });
  const long = new AbortController();
  const running = queue.submit({ op: "sleep", ms: 10_000 }, { signal: long.signal });
  const queuedController = new AbortController();
  const queued = queue.submit({ op: "square", n: 5 }, { signal: queuedController.signal });
  await tick();
  queuedController.abort();
  await assert.rejects(queued, { name: "AbortError" });
  assert.equal(queue.waiting, 0);
  const started = performance.now();
  long.abort();
  await assert.rejects(running, { name: "AbortError" });
  // The job saw its signal and returned: the worker takes the next job at once.
  assert.equal(await queue.submit({ op: "square", n: 6 }), 36);
  assert.ok(performance.now() - started < 2000);
  await assert.rejects(
    queue.submit({ op: "square", n: 1 }, { signal: AbortSignal.abort() }),
    { name: "AbortError" },
  );
  await queue.close();
});

Deno.test("WorkQueue transfers the buffers it is told to, both ways", async () => {
  const queue = open();
  const bytes = new Uint8Array([1, 2, 3, 4]);
  const sum = await queue.submit({ op: "sum", bytes }, { transfer: [bytes.buffer] });
  assert.equal(sum, 10);
  assert.equal(bytes.buffer.byteLength, 0, "input was copied, not transferred");
  const made = await queue.submit({ op: "make", size: 1024 }) as Uint8Array;
  assert.equal(made.length, 1024);
  assert.ok(made.every((b) => b === 7));
  await queue.close();
});

Deno.test("WorkQueue.close() lets submitted jobs finish and rejects new ones", async () => {
  const queue = open({ workers: 1 });
  const running = queue.submit({ op: "sleep", ms: 200 });
  const waiting = queue.submit({ op: "square", n: 7 });
  await tick();
  const closing = queue.close();
  await assert.rejects(queue.submit({ op: "square", n: 1 }), /closed/);
  assert.deepEqual(await Promise.all([running, waiting]), ["slept", 49]);
  await closing;
  await queue.close(); // idempotent
});

Deno.test("WorkQueue replaces a worker that dies, failing only its job", async () => {
  const queue = open({ workers: 1 });
  await assert.rejects(queue.submit({ op: "crash" }), (error) => {
    assert.ok(error instanceof JobError);
    assert.match(error.message, /escaped the job/);
    return true;
  });
  assert.equal(await queue.submit({ op: "square", n: 8 }), 64);
  await queue.close();
});

Deno.test("WorkQueue rejects a pool or backlog size that is not a positive integer", () => {
  assert.throws(() => open({ workers: 0 }), RangeError);
  assert.throws(() => open({ capacity: 1.5 }), RangeError);
});
