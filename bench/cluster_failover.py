"""How long a room's participants are without media after the node that runs it dies.

Three roomrelay nodes on one redis-server (``REDIS_URL``), all on loopback. Per
round, four aiortc participants join a fresh room: the first on node 0 (so that
node 0 runs the room's media), the others on nodes 1, 2 and 1. Node 0 gets
SIGKILL; the time is taken until the three participants on the surviving nodes
have each decoded a picture from the two others again (its heartbeat expires,
the room is placed again, their clients reconnect). Node 0 is started again
between rounds. Prints each round and the median::

    .venv/bin/python -m bench.cluster_failover            # 5 rounds
    .venv/bin/python -m bench.cluster_failover --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

from bench.failover import joined, recovery_seconds
from bench.relay_bench import RESULTS, ROOT, free_port

NODES = 3
HOMES = (0, 1, 2, 1)  # the node of each participant; the first one's node runs the room


class Node:
    """One roomrelay process of the cluster."""

    def __init__(self, index: int, redis_url: str) -> None:
        self.index = index
        self.redis_url = redis_url
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Node:
        RESULTS.mkdir(parents=True, exist_ok=True)
        log = (RESULTS / f"cluster-node-{self.index}.log").open("ab")
        command = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port"]
        command += [str(self.port), "--media", "relay", "--log-level", "warning"]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "REDIS_URL": self.redis_url},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2).read()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"node {self.index} did not start")

    def live_nodes(self) -> int:
        with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
            return len(json.loads(response.read())["cluster"]["nodes"])

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


async def one_round(nodes: list[Node], room: str) -> float:
    clients = await joined([nodes[home].url for home in HOMES], room, "c")
    survivors = [c for c, home in zip(clients, HOMES, strict=True) if home != 0]
    return await recovery_seconds(clients, survivors, nodes[0].kill)


async def wait_for_cluster(nodes: list[Node]) -> None:
    while not all(node.live_nodes() == NODES for node in nodes):
        await asyncio.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    nodes = [Node(i, f"redis://127.0.0.1:{redis_port}/0") for i in range(NODES)]
    results = []
    try:
        time.sleep(0.5)
        for node in nodes:
            node.start()
        for index in range(args.rounds):
            asyncio.run(asyncio.wait_for(wait_for_cluster(nodes), 30))
            seconds = asyncio.run(one_round(nodes, f"cluster-failover-{index}"))
            results.append(seconds)
            print(f"round {index + 1}: media back {seconds:.2f} s after the kill", flush=True)
            nodes[0] = Node(0, nodes[0].redis_url).start()
            time.sleep(3.0)  # the dead node's rooms and heartbeat are gone from every view
    finally:
        for node in nodes:
            node.stop()
        redis.terminate()
        redis.wait(10)
    print(f"median {statistics.median(results):.2f} s over {len(results)} rounds", flush=True)


if __name__ == "__main__":
    main()
