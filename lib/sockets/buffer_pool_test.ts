import assert from "node:assert/strict";
import { BufferPool } from "./buffer_pool.ts";

Deno.test("BufferPool reuses given buffers, newest first, and allocates when empty", () => {
  const pool = new BufferPool(16, 4);
  const a = pool.take();
  const b = pool.take();
  assert.notEqual(a, b);
  assert.equal(a.byteLength, 16);
  pool.give(a);
  pool.give(b);
  assert.equal(pool.available, 2);
  assert.equal(pool.take(), b);
  assert.equal(pool.take(), a);
  assert.equal(pool.available, 0);
});

Deno.test("BufferPool keeps at most max buffers, and only whole, live ones of its size", () => {
  const pool = new BufferPool(16, 2);
  pool.give(new ArrayBuffer(8));
  pool.give(new ArrayBuffer(32));
  const detached = new ArrayBuffer(16);
  structuredClone(detached, { transfer: [detached] });
  pool.give(detached);
  assert.equal(pool.available, 0);
  pool.give(new ArrayBuffer(16));
  pool.give(new ArrayBuffer(16));
  pool.give(new ArrayBuffer(16));
  assert.equal(pool.available, 2);
});
