// The baseline of bench/signaling_bench.py: the zoom-clone course's own video-stage server,
// reduced to its signalling (npm socket.io 4.x): join_room sends welcome to the others,
// offer/answer/ice are passed to the rest of the room without the room name.
// Usage: node bench/node_relay_server.mjs PORT   (0: any free port; prints "LISTENING <port>")
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.argv[2] ?? 3000);
const httpServer = createServer((request, response) => {
  if (request.url === "/health") {
    response.writeHead(200, { "content-type": "application/json" });
    response.end(JSON.stringify({ status: "ok", rss_bytes: process.memoryUsage().rss }));
    return;
  }
  response.writeHead(404).end();
});
const io = new Server(httpServer);

io.on("connection", (socket) => {
  socket.on("join_room", (roomName, done) => {
    socket.join(roomName);
    if (typeof done === "function") done();
    socket.to(roomName).emit("welcome");
  });
  for (const event of ["offer", "answer", "ice"]) {
    socket.on(event, (payload, roomName) => socket.to(roomName).emit(event, payload));
  }
});

httpServer.listen(port, "127.0.0.1", () => console.log(`LISTENING ${httpServer.address().port}`));
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    io.close();
    process.exit(0);
  });
}
