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
import statistics
import sys
import time
import urllib.request

from bench.failover import joined, recovery_seconds
from bench.relay_bench import RESULTS
from bench.signaling_bench import Target
from tests.support.redis import RedisServer

NODES = 3
HOMES = (0, 1, 2, 1)  # the node of each participant; the first one's node runs the room


def node(index: int, redis_url: str) -> Target:
    """One roomrelay process of the cluster (not started)."""
    command = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", "{port}"]
    command += ["--media", "relay", "--log-level", "warning"]
    return Target(f"cluster-node-{index}", command, env={"REDIS_URL": redis_url})


def live_nodes(target: Target) -> int:
    with urllib.request.urlopen(target.url + "/health", timeout=5) as response:
        return len(json.loads(response.read())["cluster"]["nodes"])


async def one_round(nodes: list[Target], room: str) -> float:
    clients = await joined([nodes[home].url for home in HOMES], room, "c")
    survivors = [c for c, home in zip(clients, HOMES, strict=True) if home != 0]
    return await recovery_seconds(clients, survivors, nodes[0].kill)


async def wait_for_cluster(nodes: list[Target]) -> None:
    while not all(live_nodes(target) == NODES for target in nodes):
        await asyncio.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(RESULTS).start()
    nodes = [node(i, redis.url) for i in range(NODES)]
    results = []
    try:
        for target in nodes:
            target.start()
        for index in range(args.rounds):
            asyncio.run(asyncio.wait_for(wait_for_cluster(nodes), 30))
            seconds = asyncio.run(one_round(nodes, f"cluster-failover-{index}"))
            results.append(seconds)
            print(f"round {index + 1}: media back {seconds:.2f} s after the kill", flush=True)
            nodes[0] = node(0, redis.url).start()
            time.sleep(3.0)  # the dead node's rooms and heartbeat are gone from every view
    finally:
        for target in nodes:
            target.stop()
        redis.stop()
    print(f"median {statistics.median(results):.2f} s over {len(results)} rounds", flush=True)


if __name__ == "__main__":
    main()
