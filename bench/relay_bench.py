"""Relay benchmark: the naive MediaRelay transcoding path against forwarding, in one run.

Run it from the project folder (after ``scripts/test.sh`` or ``scripts/serve.sh``
installed everything)::

    .venv/bin/python -m bench.relay_bench            # full run, ~6 minutes
    .venv/bin/python -m bench.relay_bench --quick    # a short sanity run

The server and the load client (``bench/load_client.py``) run as separate
processes. Publishers send pre-encoded 640x360 15 fps VP8 at ~500 kbps. For each
mode the server's CPU is sampled while the number of subscribers grows, and the
cost per subscriber stream is the slope of a least-squares line through those
points; the two slopes are measured in the same run and their ratio printed.
Then, forwarding only: 96 subscribers x 2 publishers for 60 s (frame rate,
identity, memory over time) and a 16-person room where everyone publishes and
receives everyone else (240 streams). Results are printed, saved as JSON under
``bench/results/`` and written to ``docs/benchmark.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import replace_section

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REPORT = ROOT / "docs" / "benchmark.md"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
FULL_RATE = 14.0  # fps: a 15 fps stream delivered with at most one frame a second lost


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its children (the server and its media workers)."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        children: list[str] = []
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that ended
            children = (task / "children").read_text().split()
        for child in children:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # exited since
                total += tree_cpu_seconds(int(child))
    return total


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A roomrelay process in one forwarding mode."""

    def __init__(self, forwarding: str, workers: int = 1, extra: tuple[str, ...] = ()) -> None:
        """``extra``: more command-line settings for the server."""
        self.forwarding = forwarding
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = RESULTS / f"server-{forwarding}-w{workers}.log"
        RESULTS.mkdir(exist_ok=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--forwarding", forwarding, "--log-level", "warning",
                 "--max-peers-per-room", "200", "--rate-limit", "1000",
                 "--max-connections-per-ip", "0", "--workers", str(workers), *extra],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2).read()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not start: {self.log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


@dataclass
class Sample:
    """One measured load point."""

    mode: str
    publishers: int
    subscribers: int
    server_cpu_percent: float  # median of per-second samples, 100 = one core
    client_cpu_percent: float
    rss_mb: list[float] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def streams(self) -> int:
        return int(self.result.get("streams", 0))


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """``total`` items as ``parts`` contiguous (first, end) ranges, sizes differing by one."""
    bounds = [round(total * i / parts) for i in range(parts + 1)]
    return list(itertools.pairwise(bounds))


def measure(
    server: Server,
    room: str,
    publishers: int,
    subscribers: int,
    duration: float,
    *,
    warmup: float = 3.0,
    late_joiners: int = 2,
    processes: int = 1,
    rooms: int = 1,
) -> Sample:
    """Run load processes against ``server``; sample everyone's CPU during the same window.

    Publishers and subscribers are split over ``processes`` load processes, so that
    the load generator is not the bottleneck on a multi-core machine. With ``rooms``
    above one, each of that many rooms (``room`` + index) gets the same load at once.
    """
    clients = []
    publisher_ranges, subscriber_ranges = (
        split(publishers, processes),
        split(subscribers, processes),
    )
    room_names = [room] if rooms == 1 else [f"{room}{index}" for index in range(rooms)]
    for room_name, (index, ((first, end), (sub_first, sub_end))) in itertools.product(
        room_names, enumerate(zip(publisher_ranges, subscriber_ranges, strict=True))
    ):
        options = {
            "--url": server.url,
            "--room": room_name,
            "--publishers": publishers,
            "--publishers-here": f"{first}:{end}",
            "--subscribers": sub_end - sub_first,
            "--name": f"p{index}-sub",
            "--duration": duration,
            "--warmup": warmup,
            "--late-joiners": late_joiners if index == 0 else 0,
            "--probes": 1 if index == 0 else 0,
        }
        command = [sys.executable, "-m", "bench.load_client"]
        for option, value in options.items():
            command += [option, str(value)]
        clients.append(
            subprocess.Popen(
                command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        )
        if rooms > 1:
            wait_ready(clients[-1])  # set rooms up one after another, measure them together
    for client in clients if rooms == 1 else ():
        wait_ready(client)
    for client in clients:
        assert client.stdin is not None
        client.stdin.write("GO\n")
        client.stdin.flush()
    pids = [server.process.pid] + [client.pid for client in clients]
    server_cpu, client_cpu, rss = [], [], []
    started = stamp = time.monotonic()
    before = [tree_cpu_seconds(pids[0])] + [cpu_seconds(pid) for pid in pids[1:]]
    while time.monotonic() - started < duration - 0.5:
        time.sleep(1.0)
        now = time.monotonic()
        current = [tree_cpu_seconds(pids[0])] + [cpu_seconds(pid) for pid in pids[1:]]
        server_cpu.append(100 * (current[0] - before[0]) / (now - stamp))
        client_cpu.append(
            100 * sum(c - b for c, b in zip(current[1:], before[1:], strict=True)) / (now - stamp)
        )
        rss.append(rss_mb(server.process.pid))
        stamp, before = now, current
    results = []
    for client in clients:
        assert client.stdout is not None
        results += [
            json.loads(line[len("RESULT ") :])
            for line in client.stdout
            if line.startswith("RESULT ")
        ]
        client.wait(120)
    return Sample(
        mode=server.forwarding,
        publishers=publishers,
        subscribers=subscribers,
        server_cpu_percent=statistics.median(server_cpu),
        client_cpu_percent=statistics.median(client_cpu),
        rss_mb=rss,
        result=merge(results),
    )


def wait_ready(client: subprocess.Popen[str]) -> None:
    assert client.stdout is not None
    for line in client.stdout:
        if line.startswith("READY"):
            return
    raise RuntimeError(f"a load process ended before READY (exit {client.wait()})")


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine the raw results of several load processes into one summary."""
    fps = [value for r in results for value in r["fps"]]
    arrival = [value for r in results for value in r["arrival_latency_ms"]]
    decoded = [value for r in results for value in r["decoded_latency_ms"]]
    return {
        "streams": len(fps),
        "frames_per_s": sum(fps),  # delivered, over every stream
        "fps_median": statistics.median(fps),
        "fps_min": min(fps),
        "fps_p10": percentile(fps, 0.10),
        "streams_at_full_rate": sum(1 for value in fps if value >= FULL_RATE),
        "identity_mismatched": sum(r["identity_mismatched"] for r in results),
        "frames_looked_up": sum(r["frames_looked_up"] for r in results),
        "unidentified_frames": sum(r["unidentified_frames"] for r in results),
        "lost_packets": sum(r["lost_packets"] for r in results),
        "probe_decoded_ok": sum(r["probe_decoded_ok"] for r in results),
        "probe_decoded_wrong": sum(r["probe_decoded_wrong"] for r in results),
        "arrival_latency_ms_median": statistics.median(arrival) if arrival else None,
        "arrival_latency_ms_p95": percentile(arrival, 0.95) if arrival else None,
        "decoded_latency_ms_median": statistics.median(decoded) if decoded else None,
        "late_join_s": [value for r in results for value in r["late_join_s"]],
        "late_join_keyframe_first": all(r["late_join_keyframe_first"] for r in results),
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope and intercept of y over x."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x in xs)
    return slope, mean_y - slope * mean_x


def sweep(mode: str, subscriber_counts: list[int], duration: float) -> list[Sample]:
    server = Server(mode)
    try:
        samples = []
        for count in subscriber_counts:
            sample = measure(server, f"sweep-{count}", 2, count, duration)
            samples.append(sample)
            report_line(sample)
        return samples
    finally:
        server.stop()


def report_line(sample: Sample) -> None:
    r = sample.result
    print(
        f"  {sample.mode:9} {sample.publishers:2}x{sample.subscribers:<3} "
        f"streams={sample.streams:3} "
        f"server={sample.server_cpu_percent:5.1f}% client={sample.client_cpu_percent:5.1f}% "
        f"fps median={r.get('fps_median', 0):5.2f} min={r.get('fps_min', 0):5.2f} "
        f"latency={r.get('decoded_latency_ms_median')} ms late-join={r.get('late_join_s')}",
        flush=True,
    )


def memory_trend(rss: list[float]) -> float:
    """MB per minute, from the per-second RSS samples after the first 10 s."""
    tail = rss[10:]
    if len(tail) < 2:
        return 0.0
    slope, _ = fit([(i / 60, value) for i, value in enumerate(tail)])
    return slope


def write_report(summary: dict[str, Any]) -> None:
    naive, forward = summary["per_stream"]["transcode"], summary["per_stream"]["forward"]
    fan, mesh = summary.get("fanout"), summary.get("mesh")
    lines = [
        "# Relay benchmark",
        "",
        f"Generated by `bench/relay_bench.py` on {summary['when']} ({summary['machine']}).",
        "Publishers: pre-encoded VP8, 640x360, 15 fps, ~500 kbps. CPU: 100% = one core.",
        "",
        "## Cost per subscriber stream (slope over a sweep of subscribers, same run)",
        "",
        "| mode | per-stream CPU | base CPU | points (streams: server CPU) |",
        "|---|---|---|---|",
    ]
    for mode in ("transcode", "forward"):
        data = summary["per_stream"][mode]
        points = ", ".join(f"{s}: {c:.1f}%" for s, c in data["points"])
        lines.append(f"| {mode} | {data['slope']:.3f}% | {data['intercept']:.1f}% | {points} |")
    lines += [
        "",
        f"**Forwarding is {naive['slope'] / forward['slope']:.0f}x cheaper per subscriber "
        "stream** than re-encoding per subscriber (aiortc `MediaRelay` + one encoder each).",
        "",
        "## Latency and late joiners (median of the sweep points)",
        "",
        "| mode | publisher → decoded picture | late joiner: join → first frame |",
        "|---|---|---|",
    ]
    for mode in ("transcode", "forward"):
        data = summary["per_stream"][mode]
        lines.append(f"| {mode} | {data['latency_ms']} ms | {data['late_join_s']} s |")
    if fan:
        lines += [
            "",
            f"## {fan['streams']} streams: 96 subscribers x 2 publishers, {fan['seconds']} s",
            "",
            f"- server CPU {fan['server_cpu']:.1f}%, frame rate per stream: median "
            f"{fan['fps_median']:.2f}, slowest {fan['fps_min']:.2f} fps",
            f"- identity: {fan['identity_mismatched']} misrouted frames, "
            f"{fan['unidentified']} of {fan['looked_up']} frames checked byte for byte altered "
            f"or incomplete; probe decoded {fan['probe_ok']} pictures, "
            f"{fan['probe_wrong']} wrong",
            f"- server memory {fan['rss_first']:.0f} → {fan['rss_last']:.0f} MB "
            f"({fan['rss_trend']:+.2f} MB/min over the window)",
        ]
    if mesh:
        lines += [
            "",
            f"## 16-person room: everyone publishes and receives ({mesh['streams']} streams)",
            "",
            f"- server CPU {mesh['server_cpu']:.1f}%, load client {mesh['client_cpu']:.1f}%",
            f"- frame rate per stream: median {mesh['fps_median']:.2f}, "
            f"slowest stream {mesh['fps_min']:.2f} fps, 10th percentile {mesh['fps_p10']:.2f}",
        ]
    lines += [
        "",
        "Raw figures of the latest run stay on the machine in `bench/results/latest.json`.",
        "",
    ]
    replace_section(REPORT, "relay", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sweep, no large scenarios")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per sweep point")
    parser.add_argument(
        "--workers",
        help="compare media worker counts instead, e.g. 1,2 (two rooms at once; see "
        "bench/workers_compare.py)",
    )
    parser.add_argument("--room-size", type=int, help="people per room for --workers")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    if args.workers:
        from bench.workers_compare import compare  # noqa: PLC0415 - it imports this module

        counts = [int(part) for part in args.workers.split(",")]
        compare(counts, quick=args.quick, people=args.room_size)
        return
    naive_counts = [2, 4, 6] if args.quick else [2, 4, 6, 8]
    forward_counts = [4, 8, 16] if args.quick else [8, 16, 32, 48]

    print("sweep (2 publishers, growing subscribers):", flush=True)
    sweeps = {
        "transcode": sweep("transcode", naive_counts, args.duration),
        "forward": sweep("forward", forward_counts, args.duration),
    }
    summary: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": (
            f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
        ),
        "per_stream": {},
    }
    for mode, samples in sweeps.items():
        points = [(s.streams, s.server_cpu_percent) for s in samples]
        slope, intercept = fit(points)
        latencies = [
            s.result["decoded_latency_ms_median"]
            for s in samples
            if s.result.get("decoded_latency_ms_median") is not None
        ]
        late = [t for s in samples for t in s.result.get("late_join_s", [])]
        summary["per_stream"][mode] = {
            "slope": slope,
            "intercept": intercept,
            "points": points,
            "latency_ms": round(statistics.median(latencies)) if latencies else None,
            "late_join_s": round(statistics.median(late), 2) if late else None,
        }
    ratio = summary["per_stream"]["transcode"]["slope"] / summary["per_stream"]["forward"]["slope"]
    summary["ratio"] = ratio
    print(
        f"per subscriber stream: transcode {summary['per_stream']['transcode']['slope']:.3f}% "
        f"vs forward {summary['per_stream']['forward']['slope']:.3f}% of a core "
        f"-> forwarding is {ratio:.1f}x cheaper",
        flush=True,
    )

    if not args.quick:
        server = Server("forward")
        try:
            print("96 subscribers x 2 publishers, 60 s:", flush=True)
            fan = measure(server, "fanout", 2, 96, 60, warmup=5, processes=2)
            report_line(fan)
            summary["fanout"] = {
                "streams": fan.streams,
                "seconds": 60,
                "server_cpu": fan.server_cpu_percent,
                "fps_median": fan.result["fps_median"],
                "fps_min": fan.result["fps_min"],
                "identity_mismatched": fan.result["identity_mismatched"],
                "unidentified": fan.result["unidentified_frames"],
                "looked_up": fan.result["frames_looked_up"],
                "probe_ok": fan.result["probe_decoded_ok"],
                "probe_wrong": fan.result["probe_decoded_wrong"],
                "rss_first": fan.rss_mb[0],
                "rss_last": fan.rss_mb[-1],
                "rss_trend": memory_trend(fan.rss_mb),
            }
            print("16-person room (240 streams):", flush=True)
            mesh = measure(server, "mesh", 16, 0, 20, warmup=5, late_joiners=1, processes=2)
            report_line(mesh)
            summary["mesh"] = {
                "streams": mesh.streams,
                "server_cpu": mesh.server_cpu_percent,
                "client_cpu": mesh.client_cpu_percent,
                "fps_median": mesh.result["fps_median"],
                "fps_min": mesh.result["fps_min"],
                "fps_p10": mesh.result["fps_p10"],
            }
        finally:
            server.stop()

    (RESULTS / "latest.json").write_text(json.dumps(summary, indent=2))
    if not args.quick:
        write_report(summary)
        print(f"report written to {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
