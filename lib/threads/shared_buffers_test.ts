import assert from "node:assert/strict";
import { localSharedBuffers, MAX_SHARED_BYTES, SharedBufferRegistry } from "./shared_buffers.ts";

Deno.test("SharedBufferRegistry: one buffer per name, the same for every caller", () => {
  const registry = new SharedBufferRegistry();
  const a = registry.get("cache", 4096);
  new Int32Array(a)[0] = 7;
  const again = registry.get("cache", 4096);
  assert.equal(again, a);
  assert.equal(new Int32Array(again)[0], 7);
  assert.notEqual(registry.get("other", 4096), a);
});

Deno.test("SharedBufferRegistry refuses bad names, bad sizes and a size that differs", () => {
  const registry = new SharedBufferRegistry();
  registry.get("cache", 4096);
  assert.throws(() => registry.get("cache", 8192), /exists with 4096 bytes, not 8192/);
  assert.throws(() => registry.get("no spaces", 1), /bad shared buffer name/);
  assert.throws(() => registry.get("", 1), /bad shared buffer name/);
  assert.throws(() => registry.get("x", 0), /size must be from 1/);
  assert.throws(() => registry.get("x", MAX_SHARED_BYTES + 1), /size must be from 1/);
  assert.throws(() => registry.get("x", 1.5), /size must be from 1/);
});

Deno.test("localSharedBuffers rejects instead of throwing", async () => {
  const sharedBuffer = localSharedBuffers();
  assert.equal(await sharedBuffer("a", 16), await sharedBuffer("a", 16));
  await assert.rejects(sharedBuffer("a", 32), RangeError);
});
