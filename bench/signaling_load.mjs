// One load-generating process of bench/signaling_bench.py: npm socket.io-client 4.x
// connections (WebSocket) speaking the zoom-clone video stage, in pairs, one room per pair.
//
// node bench/signaling_load.mjs URL[,URL...] CLIENTS ROOM_PREFIX RATE DURATION_S
// With several URLs (nodes of a cluster) clients take them in turn: the two clients of a
// room are on different nodes.
// Driven over stdin/stdout, one step at a time so that every process moves together:
//   -> "READY <connected> <failed>"  after connecting      <- "JOIN"
//   -> "JOINED"                       after the joins       <- "GO"
//   -> "RESULT {json}"                after sending RATE ice/s per client for DURATION_S
// "IDLE" (instead of JOIN) holds the connections until stdin closes.
import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";
import { io } from "socket.io-client";

const [urlList, clientCount, roomPrefix, rate, duration] = process.argv.slice(2);
const urls = urlList.split(",");
const CLIENTS = Number(clientCount);
const RATE = Number(rate);
const DURATION_MS = Number(duration) * 1000;
const CONNECT_BATCH = 50;
const WELCOME_TIMEOUT_MS = 10_000;
const DRAIN_MS = 3_000;

const say = (line) => process.stdout.write(line + "\n");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Latency histogram: 0.1 ms buckets below 100 ms, 1 ms buckets above. */
class Histogram {
  buckets = new Map();
  add(ms) {
    const key = ms < 100 ? Math.round(ms * 10) / 10 : Math.round(ms);
    this.buckets.set(key, (this.buckets.get(key) ?? 0) + 1);
  }
  toJSON() {
    return Object.fromEntries(this.buckets);
  }
}

const sockets = [];
const stats = {
  connected: 0,
  connect_failed: 0,
  welcome_ms: [],
  welcome_missing: 0,
  join_failed: 0,
  sent: 0,
  received: 0,
  duplicates: 0,
  misrouted: 0,
  errors: {},
  disconnects: {},
  latency: new Histogram(),
  send_seconds: 0,
};

function open(index) {
  return new Promise((resolve) => {
    const socket = io(urls[index % urls.length], { transports: ["websocket"], reconnection: false, timeout: 20_000 });
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", () => resolve(null));
  });
}

async function connectAll() {
  for (let start = 0; start < CLIENTS; start += CONNECT_BATCH) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(CONNECT_BATCH, CLIENTS - start) }, (_, i) => open(start + i)),
    );
    for (const socket of batch) {
      if (socket) sockets.push(socket);
      else stats.connect_failed += 1;
    }
  }
  stats.connected = sockets.length;
  sockets.forEach((socket, index) => {
    socket.index = index;
    socket.room = `${roomPrefix}-${index >> 1}`;
    socket.peer = index ^ 1;
    socket.seen = 0; // highest sequence number received from the peer
    socket.on("error", (error) => {
      const code = error?.code ?? String(error);
      stats.errors[code] = (stats.errors[code] ?? 0) + 1;
    });
    socket.on("disconnect", (reason) => {
      stats.disconnects[reason] = (stats.disconnects[reason] ?? 0) + 1;
    });
  });
}

function joinWithAck(socket) {
  return new Promise((resolve) => {
    socket.timeout(WELCOME_TIMEOUT_MS).emit("join_room", socket.room, (error) => {
      if (error) stats.join_failed += 1;
      resolve();
    });
  });
}

async function joinAll() {
  // First of each pair joins, then the second; the first hears welcome when the second joins.
  const pairs = sockets.filter((socket) => socket.index % 2 === 0 && sockets[socket.peer]);
  await Promise.all(pairs.map(joinWithAck));
  const arrivals = pairs.map(
    (first) =>
      new Promise((resolve) => {
        const joiner = sockets[first.peer];
        const timer = setTimeout(() => {
          stats.welcome_missing += 1;
          resolve();
        }, WELCOME_TIMEOUT_MS);
        first.once("welcome", () => {
          clearTimeout(timer);
          stats.welcome_ms.push(performance.now() - joiner.joinedAt);
          resolve();
        });
        joiner.joinedAt = performance.now();
        joiner.emit("join_room", joiner.room);
      }),
  );
  await Promise.all(arrivals);
}

function relay() {
  for (const socket of sockets) {
    socket.on("ice", (candidate) => {
      const sentAt = Number(candidate?.usernameFragment);
      const sequence = Number(candidate?.candidate?.split(" ", 1)[0].slice(10));
      if (!Number.isFinite(sentAt) || !Number.isFinite(sequence)) {
        stats.misrouted += 1;
        return;
      }
      if (sequence <= socket.seen) stats.duplicates += 1;
      socket.seen = Math.max(socket.seen, sequence);
      stats.received += 1;
      stats.latency.add(performance.now() - sentAt);
    });
  }
  const interval = 1000 / RATE;
  const started = performance.now();
  const timers = sockets.map((socket) => {
    let sequence = 0;
    const send = () => {
      sequence += 1;
      stats.sent += 1;
      const candidate = {
        candidate: `candidate:${sequence} 1 udp 2122260223 127.0.0.1 9 typ host`,
        sdpMid: "0",
        sdpMLineIndex: 0,
        usernameFragment: String(performance.now()),
      };
      socket.emit("ice", candidate, socket.room);
    };
    // Spread the clients over the interval instead of sending in lock step.
    return setTimeout(() => {
      send();
      socket.timer = setInterval(send, interval);
    }, Math.random() * interval);
  });
  return new Promise((resolve) => {
    setTimeout(async () => {
      timers.forEach(clearTimeout);
      sockets.forEach((socket) => clearInterval(socket.timer));
      stats.send_seconds = (performance.now() - started) / 1000;
      const deadline = performance.now() + DRAIN_MS;
      while (stats.received < stats.sent && performance.now() < deadline) await sleep(50);
      resolve();
    }, DURATION_MS);
  });
}

const commands = createInterface({ input: process.stdin });
const next = (() => {
  const waiting = [];
  const lines = [];
  commands.on("line", (line) => (waiting.length ? waiting.shift()(line) : lines.push(line)));
  return () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => waiting.push(r)));
})();

await connectAll();
say(`READY ${stats.connected} ${stats.connect_failed}`);
if ((await next()) === "IDLE") {
  commands.on("close", () => process.exit(0));
} else {
  await joinAll();
  say("JOINED");
  await next();
  await relay();
  sockets.forEach((socket) => socket.close());
  // A pipe is written asynchronously: exit only once the whole line is out.
  process.stdout.write("RESULT " + JSON.stringify(stats) + "\n", () => process.exit(0));
}
