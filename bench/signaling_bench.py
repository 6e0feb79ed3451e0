"""Signalling benchmark: roomrelay against the course's Node socket.io 4 server, same run.

Run it from the project folder (after ``scripts/test.sh`` installed everything)::

    .venv/bin/python -m bench.signaling_bench            # 2,000 clients, then 10,000 idle
    .venv/bin/python -m bench.signaling_bench --quick    # 200 clients, a short sanity run

The load is the zoom-clone video stage at scale: N npm ``socket.io-client`` 4.x
connections (WebSocket), in pairs, one room per pair (``--media p2p``). Per pair
the first client joins, then the second, and the time from the second's
``join_room`` to the first's ``welcome`` is the join latency. Then every client
sends ``ice`` to its room at 10/s for a while; each message carries its send time
and a sequence number, so the receiver (in the same load process) measures relay
latency, losses and duplicates. Load runs in one Node process per core, all on
loopback (more processes than cores only add the load generator's own scheduling
delays to every server's latency: on 2 cores, 4 processes put Node's relay p99 at
368 ms, 2 at 140 ms). The same load is run against roomrelay and against
``bench/node_relay_server.mjs`` (npm ``socket.io`` doing the original server's
relay), alternating, and the ratio is printed. A last phase holds idle
connections and reports each server's memory per connection.

``--variant`` runs roomrelay with one python-socketio/engine.io option changed
(see ``bench/variant_server.py``), to measure what each option gives. ``--cluster``
adds two roomrelay nodes sharing a redis-server (``REDIS_URL``), the two clients
of each room on different nodes (CPU and memory are the two nodes' and Redis's).
``--against REF`` also runs roomrelay as of another commit (a git worktree of REF,
say ``HEAD`` with uncommitted changes, or ``main~3``) in the same rounds: a change
is judged against its own baseline on the same machine minutes apart, never
against a figure from another day.
Results are printed and saved under ``bench/results/``; ``--write`` also puts
them in ``docs/benchmark.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.relay_bench import RESULTS, ROOT, cpu_seconds, free_port, percentile, rss_mb, split
from bench.report import replace_section
from tests.support.redis import RedisServer

LOAD = ROOT / "bench" / "signaling_load.mjs"
NODE_SERVER = ROOT / "bench" / "node_relay_server.mjs"
REPORT = ROOT / "docs" / "benchmark.md"
RATE = 10  # ice messages per second per client
# Seconds of idle CPU measured: longer than Socket.IO's 25 s ping interval, so that every
# server's heartbeats are in the window.
IDLE_CPU_SECONDS = 30.0


@dataclass
class Target:
    """A signalling server under test: roomrelay (in some variant) or the Node baseline."""

    name: str
    command: list[str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT

    @property
    def pids(self) -> list[int]:
        """The processes whose CPU and memory are the server's."""
        return [self.process.pid] if self.process else []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Target:
        RESULTS.mkdir(parents=True, exist_ok=True)
        log = (RESULTS / f"signaling-{self.name}.log").open("wb")
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        self.process = subprocess.Popen(
            command,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2).read()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited; see {log.name}") from None
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def stats(self) -> dict[str, Any] | None:
        """roomrelay's /stats (None for Node, or when an overloaded server does not answer)."""
        if self.name == "node":
            return None
        try:
            with urllib.request.urlopen(self.url + "/stats", timeout=60) as response:
                return json.loads(response.read())
        except OSError:
            return None


def roomrelay(variant: str, name: str = "", source: Path = ROOT) -> Target:
    server_args = ["--host", "127.0.0.1", "--port", "{port}", "--media", "p2p"]
    server_args += ["--log-level", "warning", "--rate-limit", "100", "--rate-burst", "200"]
    server_args += ["--max-connections-per-ip", "0"]  # every load client is on 127.0.0.1
    server_args += ["--max-connections", "0"]  # the idle phase holds 10,000
    # The load relays `ice` at RATE/s per client, far beyond what a browser trickles.
    server_args += ["--max-trickled-candidates", str(RATE * 60 * 2)]
    return Target(
        name or f"roomrelay-{variant}",
        [sys.executable, "-m", "bench.variant_server", variant, *server_args],
        cwd=source,
    )


@contextmanager
def checkout(ref: str) -> Iterator[Path]:
    """A temporary git worktree of ``ref`` (its own ``server`` package; our venv and npm
    packages)."""
    with tempfile.TemporaryDirectory(prefix="roomrelay-against-") as folder:
        path = Path(folder) / "tree"
        git = ["git", "-C", str(ROOT)]
        subprocess.run([*git, "worktree", "add", "--detach", str(path), ref], check=True)
        (path / "node_modules").symlink_to(ROOT / "node_modules")
        try:
            yield path
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=False)


class ClusterTarget(Target):
    """Two roomrelay nodes on one redis-server; clients alternate between the nodes."""

    def __init__(self, variant: str) -> None:
        super().__init__(f"roomrelay-2-nodes-redis-{variant}", [])
        self.redis = RedisServer(RESULTS)
        self.nodes = [roomrelay(variant, f"{self.name}-{i}") for i in range(2)]
        for node in self.nodes:
            node.env = {"REDIS_URL": self.redis.url}

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def pids(self) -> list[int]:
        redis = [self.redis.process.pid] if self.redis.process else []
        return [pid for node in self.nodes for pid in node.pids] + redis

    def start(self) -> Target:
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        for node in self.nodes:
            node.start()
        self.process = self.nodes[0].process
        time.sleep(1.0)  # the nodes see each other's heartbeats
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.redis.stop()

    def stats(self) -> dict[str, Any] | None:
        return self.nodes[0].stats()


def node_server() -> Target:
    return Target("node", ["node", str(NODE_SERVER), "{port}"])


class LoadProcesses:
    """Several Node load processes moved through their steps together."""

    def __init__(self, target: Target, clients: int, processes: int, duration: float) -> None:
        self.processes = []
        for index, (first, end) in enumerate(split(clients // 2, processes)):
            prefix = f"{target.name}-{index}"
            command = ["node", str(LOAD), target.url, str(2 * (end - first)), prefix]
            command += [str(RATE), str(duration)]
            self.processes.append(
                subprocess.Popen(
                    command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
                )
            )

    def expect(self, word: str) -> list[str]:
        """The rest of each process's line starting with ``word``."""
        lines = []
        for process in self.processes:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith(word):
                    lines.append(line[len(word) :].strip())
                    break
            else:
                raise RuntimeError(f"a load process ended before {word} (exit {process.wait()})")
        return lines

    def tell(self, command: str) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(command + "\n")
            process.stdin.flush()

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def close(self) -> None:
        for process in self.processes:
            if process.stdin:
                process.stdin.close()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def histogram_percentile(histogram: dict[float, int], fraction: float) -> float | None:
    total = sum(histogram.values())
    if not total:
        return None
    wanted, seen = fraction * total, 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= wanted:
            return value
    return max(histogram)


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The load processes' raw results as one summary."""
    latency: dict[float, int] = {}
    for result in results:
        for key, count in result["latency"].items():
            latency[float(key)] = latency.get(float(key), 0) + count
    welcome = [value for result in results for value in result["welcome_ms"]]
    sent = sum(result["sent"] for result in results)
    received = sum(result["received"] for result in results)
    seconds = max(result["send_seconds"] for result in results)
    disconnects: dict[str, int] = {}
    for result in results:
        for reason, count in result["disconnects"].items():
            disconnects[reason] = disconnects.get(reason, 0) + count
    return {
        "connected": sum(result["connected"] for result in results),
        "connect_failed": sum(result["connect_failed"] for result in results),
        "welcomes": len(welcome),
        "welcome_missing": sum(result["welcome_missing"] for result in results),
        "join_failed": sum(result["join_failed"] for result in results),
        "welcome_ms_median": statistics.median(welcome) if welcome else None,
        "welcome_ms_p99": percentile(welcome, 0.99) if welcome else None,
        "sent": sent,
        "received": received,
        "lost": sent - received,
        "duplicates": sum(result["duplicates"] for result in results),
        "misrouted": sum(result["misrouted"] for result in results),
        "send_seconds": seconds,
        "relayed_per_s": received / seconds if seconds else 0.0,
        "latency_ms_median": histogram_percentile(latency, 0.5),
        "latency_ms_p99": histogram_percentile(latency, 0.99),
        "latency_ms_max": max(latency) if latency else None,
        "errors": {k: v for result in results for k, v in result["errors"].items()},
        "disconnects_during_run": disconnects,
    }


def run_load(target: Target, clients: int, processes: int, duration: float) -> dict[str, Any]:
    """One full load run against a started target: connect, join, relay."""
    assert target.process is not None
    pids = target.pids
    rss_before = sum(rss_mb(pid) for pid in pids)
    load = LoadProcesses(target, clients, processes, duration)
    try:
        ready = [line.split() for line in load.expect("READY")]
        load.tell("JOIN")
        load.expect("JOINED")
        rss_joined = sum(rss_mb(pid) for pid in pids)
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        load_cpu_before = sum(cpu_seconds(p) for p in load.pids)
        started = time.monotonic()
        peak = rss_joined
        load.tell("GO")
        # Sample memory while the relay runs; the processes answer when done.
        while time.monotonic() - started < duration:
            time.sleep(1.0)
            peak = max(peak, sum(rss_mb(pid) for pid in pids))
        lines = load.expect("RESULT")  # after the last messages arrived (or a drain timeout)
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        load_cpu = sum(cpu_seconds(p) for p in load.pids) - load_cpu_before
        wall = time.monotonic() - started
    finally:
        load.close()
    summary = merge([json.loads(line) for line in lines])
    summary.update(
        target=target.name,
        clients=clients,
        ready=[int(connected) for connected, _ in ready],
        rss_mb_start=round(rss_before, 1),
        rss_mb_joined=round(rss_joined, 1),
        rss_mb_peak=round(peak, 1),
        server_cpu_percent=round(100 * cpu / wall, 1),
        # Robust on a busy machine, where a starved process relays less but pays the same.
        server_cpu_us_per_msg=round(1e6 * cpu / max(summary["received"], 1), 1),
        load_cpu_percent=round(100 * load_cpu / wall, 1),
    )
    stats = target.stats()
    if stats is not None:
        summary["server_tasks_after"] = stats["process"]["tasks"]
        summary["slow_readers_disconnected"] = stats["signaling"]["slow_readers_disconnected"]
    return summary


def idle_memory(target: Target, clients: int, processes: int) -> dict[str, Any]:
    """Memory per idle connection: ``clients`` connections held open, nothing sent."""
    assert target.process is not None
    pid = target.process.pid
    time.sleep(1.0)
    before = rss_mb(pid)
    load = LoadProcesses(target, clients, processes, 0)
    try:
        ready = [line.split() for line in load.expect("READY")]
        time.sleep(3.0)
        held = rss_mb(pid)
        cpu_before, stamp = cpu_seconds(pid), time.monotonic()
        time.sleep(IDLE_CPU_SECONDS)
        idle_cpu = 100 * (cpu_seconds(pid) - cpu_before) / (time.monotonic() - stamp)
        load.tell("IDLE")
    finally:
        load.close()
    connected = sum(int(c) for c, _ in ready)
    return {
        "target": target.name,
        "connected": connected,
        "failed": sum(int(f) for _, f in ready),
        "rss_mb_before": round(before, 1),
        "rss_mb_held": round(held, 1),
        "kb_per_connection": round((held - before) * 1024 / max(connected, 1), 1),
        "idle_cpu_percent": round(idle_cpu, 1),
    }


def show(summary: dict[str, Any]) -> None:
    print(
        f"  {summary['target']:>22}: {summary['connected']}/{summary['clients']} connected, "
        f"welcome {summary['welcomes']} (missing {summary['welcome_missing']}) "
        f"median {fmt(summary['welcome_ms_median'])} p99 {fmt(summary['welcome_ms_p99'])} ms; "
        f"relayed {summary['relayed_per_s']:.0f}/s of "
        f"{summary['sent'] / summary['send_seconds']:.0f}/s sent, lost {summary['lost']}, "
        f"latency median {fmt(summary['latency_ms_median'])} "
        f"p99 {fmt(summary['latency_ms_p99'])} ms; server CPU {summary['server_cpu_percent']}%, "
        f"{summary['server_cpu_us_per_msg']} us/msg, RSS peak {summary['rss_mb_peak']} MB",
        flush=True,
    )


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def compare(
    variants: list[str],
    clients: int,
    processes: int,
    duration: float,
    rounds: int,
    cluster: bool = False,
    against: tuple[str, Path] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Alternate the targets round by round, each on a fresh server."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for round_number in range(rounds):
        print(f"round {round_number + 1}/{rounds}: {clients} clients", flush=True)
        targets = [node_server(), *(roomrelay(variant) for variant in variants)]
        if against is not None:
            ref, source = against
            targets.append(roomrelay(variants[0], f"roomrelay-at-{ref}", source))
        if cluster:
            targets.append(ClusterTarget(variants[0]))
        for target in targets:
            target.start()
            try:
                summary = run_load(target, clients, processes, duration)
            finally:
                target.stop()
            show(summary)
            runs.setdefault(target.name, []).append(summary)
    return runs


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    baseline = median_of(runs["node"], "relayed_per_s") or 1.0
    baseline_cpu = median_of(runs["node"], "server_cpu_us_per_msg") or 1.0
    rows = []
    for name, results in runs.items():
        throughput = median_of(results, "relayed_per_s") or 0.0
        rows.append(
            {
                "target": name,
                "runs": len(results),
                "relayed_per_s": round(throughput),
                "ratio_to_node": round(throughput / baseline, 2),
                "latency_ms_median": median_of(results, "latency_ms_median"),
                "latency_ms_p99": median_of(results, "latency_ms_p99"),
                "lost": sum(run["lost"] for run in results),
                "sent": sum(run["sent"] for run in results),
                "welcome_ms_median": median_of(results, "welcome_ms_median"),
                "welcome_ms_p99": median_of(results, "welcome_ms_p99"),
                "welcome_missing": sum(run["welcome_missing"] for run in results),
                "server_cpu_percent": median_of(results, "server_cpu_percent"),
                "server_cpu_us_per_msg": median_of(results, "server_cpu_us_per_msg"),
                "cpu_per_msg_vs_node": round(
                    (median_of(results, "server_cpu_us_per_msg") or 0.0) / baseline_cpu, 2
                ),
                "load_cpu_percent": median_of(results, "load_cpu_percent"),
                "rss_mb_peak": max(run["rss_mb_peak"] for run in results),
            }
        )
    return rows


def write_report(
    section: str,
    command: str,
    clients: int,
    duration: float,
    rows: list[dict[str, Any]],
    idle: list[dict],
) -> None:
    load_average = (Path("/proc/loadavg").read_text().split() or ["?"])[0]
    lines = [
        f"## Signalling: {', '.join(row['target'] for row in rows)}",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M')} "
        f"({platform.machine()}, Python {platform.python_version()}, "
        f"load average {load_average} at the end).",
        f"{clients} npm `socket.io-client` 4.x connections (WebSocket) in {clients // 2} "
        f"zoom-clone video-stage rooms of two, `--media p2p`, `ice` at {RATE}/s per client "
        f"for {duration:.0f} s; medians over the rounds, targets alternating, fresh server each.",
        "",
        "| server | relayed msg/s | vs Node | server CPU per relayed msg | relay latency "
        "median / p99 | lost / sent | join → welcome median / p99 (missing) | server CPU "
        "| load CPU | server RSS peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['target']} | {row['relayed_per_s']} | {row['ratio_to_node']:.2f}x "
            f"| {fmt(row['server_cpu_us_per_msg'])} µs ({row['cpu_per_msg_vs_node']:.2f}x Node's) "
            f"| {fmt(row['latency_ms_median'])} / {fmt(row['latency_ms_p99'])} ms "
            f"| {row['lost']} / {row['sent']} "
            f"| {fmt(row['welcome_ms_median'])} / {fmt(row['welcome_ms_p99'])} ms "
            f"({row['welcome_missing']}) | {fmt(row['server_cpu_percent'])}% "
            f"| {fmt(row['load_cpu_percent'])}% | {row['rss_mb_peak']} MB |"
        )
    if idle:
        lines += [
            "",
            "Idle connections (connected, nothing sent):",
            "",
            "| server | connections | RSS before → held | per connection | idle CPU |",
            "|---|---|---|---|---|",
        ]
        for entry in idle:
            lines.append(
                f"| {entry['target']} | {entry['connected']} ({entry['failed']} failed) "
                f"| {entry['rss_mb_before']} → {entry['rss_mb_held']} MB "
                f"| {entry['kb_per_connection']} KB | {entry['idle_cpu_percent']}% |"
            )
    replace_section(REPORT, section, "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 clients, short runs")
    parser.add_argument("--clients", type=int, help="connections in the relay run (even)")
    parser.add_argument("--duration", type=float, help="seconds of ice relay per run")
    parser.add_argument("--rounds", type=int, help="rounds of alternating targets")
    parser.add_argument(
        "--processes",
        type=int,
        default=max(2, os.cpu_count() or 2),
        help="Node load processes (default: one per core)",
    )
    parser.add_argument("--idle", type=int, help="idle connections held at the end (0: skip)")
    parser.add_argument(
        "--variant",
        action="append",
        help="roomrelay variant(s) to run (bench/variant_server.py); default: 'default'",
    )
    parser.add_argument(
        "--against", metavar="REF", help="also run roomrelay as of git REF (same rounds)"
    )
    parser.add_argument("--write", action="store_true", help="update docs/benchmark.md")
    parser.add_argument(
        "--cluster", action="store_true", help="also two nodes on one Redis (REDIS_URL)"
    )
    parser.add_argument(
        "--section",
        default="signaling",
        help="which section of docs/benchmark.md --write replaces (one per kind of run)",
    )
    args = parser.parse_args()
    clients = args.clients or (200 if args.quick else 2000)
    duration = args.duration or (10.0 if args.quick else 30.0)
    rounds = args.rounds or (1 if args.quick else 3)
    idle_count = args.idle if args.idle is not None else (1000 if args.quick else 10000)
    variants = args.variant or ["default"]

    with ExitStack() as stack:
        against = None
        if args.against:
            against = (args.against, stack.enter_context(checkout(args.against)))
        runs = compare(variants, clients, args.processes, duration, rounds, args.cluster, against)
    rows = summarize(runs)
    print("\nmedians:")
    for row in rows:
        print(f"  {row}")
    idle = []
    if idle_count:
        for target in [node_server(), roomrelay(variants[0])]:
            target.start()
            try:
                idle.append(idle_memory(target, idle_count, args.processes))
            finally:
                target.stop()
            print(f"  idle: {idle[-1]}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "signaling-latest.json").write_text(
        json.dumps({"runs": runs, "rows": rows, "idle": idle}, indent=2)
    )
    if args.write:
        command = " ".join([".venv/bin/python -m bench.signaling_bench", *sys.argv[1:]])
        write_report(args.section, command, clients, duration, rows, idle)


if __name__ == "__main__":
    main()
