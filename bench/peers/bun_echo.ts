// A peer for `deno task bench --peers`: Bun's `Bun.listen` echo server, one thread. What a
// write does not take is kept for `drain`, as Bun's socket API requires.
// Usage: bun bench/peers/bun_echo.ts [port]
// deno-lint-ignore-file no-explicit-any
const Bun = (globalThis as any).Bun;
const server = Bun.listen({
  hostname: "::",
  port: Number(Bun.argv[2] ?? 0),
  socket: {
    open(socket: any) {
      socket.setNoDelay?.(true);
      socket.data = { rest: undefined as Uint8Array | undefined };
    },
    data(socket: any, data: Uint8Array) {
      if (socket.data.rest !== undefined) {
        const joined = new Uint8Array(socket.data.rest.length + data.length);
        joined.set(socket.data.rest);
        joined.set(data, socket.data.rest.length);
        socket.data.rest = joined;
        return;
      }
      const written = socket.write(data);
      if (written < data.length) socket.data.rest = data.slice(Math.max(0, written));
    },
    drain(socket: any) {
      const rest = socket.data.rest;
      if (rest === undefined) return;
      const written = socket.write(rest);
      socket.data.rest = written < rest.length ? rest.slice(Math.max(0, written)) : undefined;
    },
  },
});
Bun.write(Bun.stderr, `bun listening on [::]:${server.port}\n`);
