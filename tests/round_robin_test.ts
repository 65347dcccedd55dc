import assert from "node:assert/strict";
import { RoundRobin } from "../lib/main_thread/round_robin.ts";

Deno.test("RoundRobin.next() cycles through every slot and wraps after the last", () => {
  const rr = new RoundRobin(3);
  assert.deepEqual(Array.from({ length: 7 }, () => rr.next()), [0, 1, 2, 0, 1, 2, 0]);
});

Deno.test("RoundRobin.next() skips unavailable slots and keeps the rotation", () => {
  const rr = new RoundRobin(4);
  const notTwo = (slot: number) => slot !== 2;
  assert.deepEqual(Array.from({ length: 6 }, () => rr.next(notTwo)), [0, 1, 3, 0, 1, 3]);
});

Deno.test("RoundRobin.next() returns undefined when no slot is available", () => {
  const rr = new RoundRobin(2);
  assert.equal(rr.next(() => false), undefined);
  assert.equal(rr.next(), 0);
});

Deno.test("RoundRobin with one slot always picks it", () => {
  const rr = new RoundRobin(1);
  assert.deepEqual([rr.next(), rr.next()], [0, 0]);
});

Deno.test("RoundRobin rejects a slot count that is not a positive integer", () => {
  assert.throws(() => new RoundRobin(0), RangeError);
  assert.throws(() => new RoundRobin(1.5), RangeError);
});
