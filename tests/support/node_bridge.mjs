// A real npm socket.io-client 4.x, driven line by line from the Python tests.
// stdin:  {"id": 1, "op": "emit", "event": "x", "args": [...], "ack": true}
//         {"id": 2, "op": "close"}
// stdout: {"type": "connect", "id": "<sid>"} | {"type": "event", "event": "x", "args": [...]}
//         {"type": "ack", "id": 1, "event": "x", "args": [...]} | {"type": "disconnect", "reason": "..."}
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const url = process.argv[2];
const socket = io(url, { transports: ["polling", "websocket"], reconnection: false });
const send = (message) => process.stdout.write(JSON.stringify(message) + "\n");

socket.on("connect", () => send({ type: "connect", id: socket.id }));
socket.on("connect_error", (error) => send({ type: "connect_error", message: String(error) }));
socket.on("disconnect", (reason) => send({ type: "disconnect", reason }));
socket.onAny((event, ...args) => send({ type: "event", event, args }));

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  if (command.op === "close") {
    socket.close();
    setTimeout(() => process.exit(0), 50);
    return;
  }
  const args = command.args ?? [];
  if (command.ack) {
    socket.emit(command.event, ...args, (...ackArgs) =>
      send({ type: "ack", id: command.id, event: command.event, args: ackArgs }));
  } else {
    socket.emit(command.event, ...args);
  }
});
