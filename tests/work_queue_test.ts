import assert from "node:assert/strict";
import { JobError, WorkQueue } from "../lib/work_queue/work_queue.ts";
import type { TestJob } from "./fixtures/jobs_worker.ts";

const WORKER = new URL("./fixtures/jobs_worker.ts", import.meta.url);
const open = (options: { workers?: number; capacity?: number } = {}) =>
  new WorkQueue<TestJob, unknown>(WORKER, { workers: 2, ...options });
const tick = (ms = 20) => new Promise((resolve) => setTimeout(resolve, ms));

/** Awaits `promise`, failing the test if it has not settled within `ms`: a hang is a failure. */
async function within<T>(promise: Promise<T>, ms = 10_000, what = "promise"): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

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
  long.abort();
  await assert.rejects(running, { name: "AbortError" });
  // The job saw its signal and returned: the worker takes the next job at once.
  assert.equal(await within(queue.submit({ op: "square", n: 6 }), 5000, "the next job"), 36);
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

Deno.test("WorkQueue: a submit cancelled while waiting for room never costs another its turn", async () => {
  // With the backlog full, a waiting submit that is cancelled used to swallow the wake-up meant
  // for the next waiting submit, which then never settled (and close() with it).
  const queue = open({ workers: 1, capacity: 1 });
  const running = queue.submit({ op: "sleep", ms: 100 });
  const queued = queue.submit({ op: "square", n: 2 });
  const cancel = new AbortController();
  const cancelled = queue.submit({ op: "square", n: 3 }, { signal: cancel.signal });
  const last = queue.submit({ op: "square", n: 4 });
  cancel.abort();
  await assert.rejects(within(cancelled), { name: "AbortError" });
  assert.deepEqual(await within(Promise.all([running, queued, last]), 5000, "jobs"), [
    "slept",
    4,
    16,
  ]);
  await within(queue.close(), 5000, "close()");
});

Deno.test("WorkQueue: a submit waiting for room rejects as soon as its signal aborts", async () => {
  const queue = open({ workers: 1, capacity: 1 });
  const running = queue.submit({ op: "sleep", ms: 2000 });
  const queued = queue.submit({ op: "square", n: 2 });
  const cancel = new AbortController();
  const waiting = queue.submit({ op: "square", n: 3 }, { signal: cancel.signal });
  let settled = false;
  waiting.catch(() => settled = true);
  cancel.abort();
  await tick(0);
  await tick(0);
  assert.equal(settled, true, "still pending after its signal aborted");
  await assert.rejects(waiting, { name: "AbortError" });
  assert.deepEqual(await Promise.all([running, queued]), ["slept", 4]);
  await queue.close();
});

Deno.test("WorkQueue: cancellation rejects with the signal's reason, AbortError by default", async () => {
  const queue = open({ workers: 1 });
  await assert.rejects(
    queue.submit({ op: "square", n: 1 }, { signal: AbortSignal.abort() }),
    { name: "AbortError" },
  );
  const custom = new AbortController();
  const job = queue.submit({ op: "sleep", ms: 5000 }, { signal: custom.signal });
  await tick();
  custom.abort(new RangeError("changed my mind"));
  await assert.rejects(job, { name: "RangeError", message: "changed my mind" });
  await queue.close();
});

for (
  const [op, pattern] of [["exit", /worker exited \(code 3\)/], [
    "close",
    /worker closed itself/,
  ]] as const
) {
  Deno.test(`WorkQueue: a job that ends its worker (${op}) fails clearly, and the worker is replaced`, async () => {
    const queue = open({ workers: 1 });
    const job: TestJob = op === "exit" ? { op: "exit", code: 3 } : { op: "close" };
    await assert.rejects(within(queue.submit(job), 5000, "the job"), (error) => {
      assert.ok(error instanceof JobError, String(error));
      assert.match(error.message, pattern);
      return true;
    });
    assert.equal(await within(queue.submit({ op: "square", n: 9 }), 5000, "the next job"), 81);
    await within(queue.close(), 5000, "close()");
  });
}

Deno.test("WorkQueue: a hard cancel stops a job that never yields, and the worker is replaced", async () => {
  const queue = open({ workers: 1 });
  const cancel = new AbortController();
  const spinning = queue.submit({ op: "spin", ms: 60_000 }, {
    signal: cancel.signal,
    hardCancel: true,
  });
  await tick(100);
  cancel.abort();
  await assert.rejects(spinning, { name: "AbortError" });
  // The spinning worker was terminated: the next job runs on its replacement, not in a minute.
  assert.equal(await within(queue.submit({ op: "square", n: 5 }), 5000, "the next job"), 25);
  await within(queue.close(), 5000, "close()");
});

Deno.test("WorkQueue: errors it handles spill no Deno stack on stderr", async () => {
  const script = `
    import { WorkQueue } from ${
    JSON.stringify(new URL("../lib/work_queue/work_queue.ts", import.meta.url).href)
  };
    const queue = new WorkQueue(${JSON.stringify(WORKER.href)}, { workers: 1 });
    for (const job of [{ op: "stray" }, { op: "crash" }]) {
      await queue.submit(job).then(() => { throw new Error("should have failed"); }, (e) => {
        if (e.name !== "JobError") throw e;
      });
    }
    await queue.close();
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, stderr);
  assert.doesNotMatch(stderr, /Uncaught|\n\s+at /, stderr);
});

Deno.test("WorkQueue: random submits, cancels and a close all settle, and the counts add up", async () => {
  let seed = 20261126;
  const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  // One worker and a backlog of 2: most submits wait for room, where cancels used to lose
  // wake-ups.
  const queue = open({ workers: 1, capacity: 2 });
  const outcomes: Promise<"done" | "cancelled" | "closed">[] = [];
  const n = 600;
  for (let i = 0; i < n; i++) {
    const cancel = new AbortController();
    const roll = random();
    const job: TestJob = roll < 0.3
      ? { op: "sleep", ms: Math.floor(random() * 4) }
      : { op: "square", n: i };
    const promise = queue.submit(job, { signal: cancel.signal, hardCancel: random() < 0.2 });
    outcomes.push(promise.then(
      () => "done" as const,
      (e) =>
        e?.name === "AbortError"
          ? "cancelled" as const
          : (/closed/.test(e?.message) ? "closed" as const : Promise.reject(e)),
    ));
    if (random() < 0.35) {
      const when = random();
      if (when < 0.4) cancel.abort();
      else setTimeout(() => cancel.abort(), Math.floor(random() * 5));
    }
    if (random() < 0.1) await tick(1);
  }
  // Every submit must settle on its own (a lost wake-up leaves one pending); only then close.
  const results = await within(Promise.all(outcomes), 20_000, "every submit");
  await within(queue.close(), 5000, "close()");
  const count = (kind: string) => results.filter((r) => r === kind).length;
  assert.equal(count("done") + count("cancelled") + count("closed"), n);
  assert.ok(
    count("done") > 0 && count("cancelled") > 0,
    JSON.stringify({ done: count("done"), cancelled: count("cancelled") }),
  );
  assert.equal(queue.waiting, 0);
  assert.equal(queue.running, 0);
});
