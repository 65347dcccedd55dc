// A peer for `deno task bench --peers`: the plainest Node.js echo server (`net`), one thread.
// Usage: node bench/peers/node_echo.mjs [port]
import net from "node:net";

const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  socket.on("data", (chunk) => socket.write(chunk));
  socket.on("error", () => socket.destroy());
});
server.listen({ host: "::", port: Number(process.argv[2] ?? 0), backlog: 4096 }, () => {
  process.stderr.write(`node listening on [::]:${server.address().port}\n`);
});
