#!/usr/bin/env python3
"""The Markdown table of scripts/bench-peer from its runs.jsonl.

Produce runs of the same broker, partitions and compression are taken
together: records and seconds added up, latencies and CPU per million the
mean of the rounds'. Each StreamHouse row is followed by its ratio to
tansu's. Run `python3 scripts/bench_peer_table.py --test` for its tests.
"""

import json
import sys
import unittest
from collections import defaultdict

BROKERS = ("tansu", "streamhouse")


def load(lines):
    return [json.loads(line) for line in lines if line.strip()]


def mean(values):
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def summarize(runs):
    """One summary per (kind, partitions, compression or rate, broker)."""
    groups = defaultdict(list)
    for r in runs:
        if r["mode"] == "produce":
            kind = "max" if r.get("target_rate", 0) == 0 else "rate"
            key = (kind, r["partitions"], r["compression"] if kind == "max" else r["target_rate"])
        else:
            key = ("read", r["partitions"], r["compression"])
        groups[key + (r["broker"],)].append(r)
    out = {}
    for key, rs in groups.items():
        records = sum(r["records"] for r in rs)
        seconds = sum(r["seconds"] for r in rs)
        out[key] = {
            "records_per_sec": records / seconds if seconds else 0.0,
            "p50": mean(r.get("ack_p50_ms", 0.0) for r in rs),
            "p99": mean(r.get("ack_p99_ms", 0.0) for r in rs),
            "client": mean(r["client_cpu_s_per_million"] for r in rs),
            "broker": mean(r["broker_cpu_s_per_million"] for r in rs),
            "s3": mean(r["s3_cpu_s_per_million"] for r in rs),
            "puts_per_sec": sum(r["s3_puts"] for r in rs) / seconds if seconds else 0.0,
            "gets_per_mb": gets_per_mb(rs),
        }
    return out


def gets_per_mb(runs):
    """GETs per MB the agent fetched, from its own metrics, when known."""
    gets = sum(r.get("agent_gets", 0) for r in runs)
    fetched = sum(r.get("agent_get_bytes", 0) for r in runs)
    return gets / (fetched / 1e6) if fetched else None


def ratio(a, b):
    return f"{a / b:.2f}x" if b else "-"


def table(runs):
    s = summarize(runs)
    lines = [
        "| run | broker | records/s | ack p50 ms | ack p99 ms | client CPU s/M | broker CPU s/M | S3 server CPU s/M | PUTs/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(label, key):
        t, h = s.get(key + ("tansu",)), s.get(key + ("streamhouse",))
        for broker, v in (("tansu", t), ("streamhouse", h)):
            if v is None:
                continue
            lines.append(
                f"| {label} | {broker} | {v['records_per_sec']:,.0f} | {v['p50']:.1f} | {v['p99']:.1f} | "
                f"{v['client']:.2f} | {v['broker']:.2f} | {v['s3']:.2f} | {v['puts_per_sec']:.0f} |"
            )
        if t and h:
            lines.append(
                f"| {label} | streamhouse / tansu | {ratio(h['records_per_sec'], t['records_per_sec'])} | "
                f"{ratio(h['p50'], t['p50'])} | {ratio(h['p99'], t['p99'])} | {ratio(h['client'], t['client'])} | "
                f"{ratio(h['broker'], t['broker'])} | {ratio(h['s3'], t['s3'])} | "
                f"{ratio(h['puts_per_sec'], t['puts_per_sec'])} |"
            )

    for partitions in sorted({k[1] for k in s if k[0] == "max"}):
        for compression in sorted({k[2] for k in s if k[0] == "max" and k[1] == partitions}):
            row(f"{partitions} partitions, {compression}, max rate", ("max", partitions, compression))
    for rate in sorted({k[2] for k in s if k[0] == "rate"}):
        partitions = next(k[1] for k in s if k[0] == "rate" and k[2] == rate)
        row(f"{partitions} partitions, none, {rate:,} records/s", ("rate", partitions, rate))
    reads = sorted({k[1:3] for k in s if k[0] == "read"})
    if reads:
        lines += [
            "",
            "| catch-up read (restarted broker) | broker | records/s | vs its own produce rate | client CPU s/M | broker CPU s/M | S3 server CPU s/M | GETs per MB fetched |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for partitions, compression in reads:
            for broker in BROKERS:
                v = s.get(("read", partitions, compression, broker))
                if v is None:
                    continue
                produced = s.get(("max", partitions, compression, broker))
                vs = ratio(v["records_per_sec"], produced["records_per_sec"]) if produced else "-"
                gets = "-" if v["gets_per_mb"] is None else f"{v['gets_per_mb']:.3f}"
                lines.append(
                    f"| {partitions} partitions, {compression} | {broker} | {v['records_per_sec']:,.0f} | {vs} | "
                    f"{v['client']:.2f} | {v['broker']:.2f} | {v['s3']:.2f} | {gets} |"
                )
    return "\n".join(lines)


class Tests(unittest.TestCase):
    def run_line(self, broker, mode="produce", records=1e6, seconds=1.0, **kw):
        r = {
            "broker": broker, "mode": mode, "partitions": 16, "compression": "none",
            "records": records, "seconds": seconds, "target_rate": 0,
            "ack_p50_ms": 2.0, "ack_p99_ms": 4.0, "client_cpu_s_per_million": 0.5,
            "broker_cpu_s_per_million": 0.3, "s3_cpu_s_per_million": 0.1, "s3_puts": 100,
        }
        r.update(kw)
        return r

    def test_rounds_add_records_and_average_latency(self):
        runs = [
            self.run_line("tansu", records=1e6, seconds=1.0, ack_p99_ms=4.0),
            self.run_line("tansu", records=3e6, seconds=1.0, ack_p99_ms=8.0),
        ]
        v = summarize(runs)[("max", 16, "none", "tansu")]
        self.assertEqual(v["records_per_sec"], 2e6)
        self.assertEqual(v["p99"], 6.0)
        self.assertEqual(v["puts_per_sec"], 100.0)

    def test_ratio_rows_compare_streamhouse_with_tansu(self):
        runs = [
            self.run_line("tansu", records=1e6, broker_cpu_s_per_million=0.4),
            self.run_line("streamhouse", records=2e6, broker_cpu_s_per_million=0.1),
        ]
        t = table(runs)
        self.assertIn("| 16 partitions, none, max rate | streamhouse / tansu | 2.00x |", t)
        self.assertIn("| 0.25x |", t)

    def test_reads_are_compared_with_the_same_brokers_produce_rate(self):
        runs = [
            self.run_line("streamhouse", records=1e6, seconds=1.0),
            self.run_line("streamhouse", mode="read", records=3e6, seconds=1.0,
                          agent_gets=10, agent_get_bytes=80_000_000),
        ]
        t = table(runs)
        self.assertIn("| 16 partitions, none | streamhouse | 3,000,000 | 3.00x |", t)
        self.assertIn("| 0.125 |", t)

    def test_fixed_rate_runs_get_rows_of_their_own(self):
        runs = [self.run_line("streamhouse", target_rate=10000, records=1e4)]
        self.assertIn("| 16 partitions, none, 10,000 records/s | streamhouse | 10,000 |", table(runs))


if __name__ == "__main__":
    if sys.argv[1:] == ["--test"]:
        unittest.main(argv=[sys.argv[0]])
    elif len(sys.argv) == 2:
        with open(sys.argv[1]) as f:
            print(table(load(f)))
    else:
        sys.exit("usage: bench_peer_table.py RUNS.jsonl | --test")
