#!/usr/bin/env python3
"""Runs `dwcp-bench wan --tun` over a matrix of links and writes the results
as JSON (one object per cell and subject) for docs/benchmarks/plot.py.

    sudo python3 scripts/wan_matrix.py > docs/benchmarks/wan-matrix.json
    python3 scripts/wan_matrix.py --table docs/benchmarks/wan-matrix.json

The second form prints the Markdown table of docs/benchmarks.md from such a
file: goodput in % of the link per subject, with the DWCP subjects'
retransmitted share and median queue, and "CPU" after a figure whose
transfer the CPU bound (the thread driving both ends, or the machine, busy
90 % of the time or more; see dwcp-bench's `cpu_use`).

`--rates 10,1000` runs only the cells of those link rates, `--rtts 1,50`
only those round trips; each cell's rows
are also appended to `wan-matrix.partial.jsonl` (in the working directory)
as they come, so an interrupted run keeps what it measured. A cell that
takes more than 20 minutes is stopped and reported as failed.

Needs root (network namespaces) and a release build of dwcp-bench. The
CUBIC subjects (kernel TCP, raw TLS, rust-yamux, quinn) run on clean cells
only: under loss they take minutes per cell (CUBIC halves its window at
every loss) and say nothing new.
Cells run one after another; nothing else should run on the machine.
"""
import json
import os
import subprocess
import sys

BENCH = os.environ.get("DWCP_BENCH", "target/release/dwcp-bench")
LOSSY = ("kernel tcp (bbr),raw tls tcp (bbr),yamux over tls tcp (bbr),"
         "lanes,quinn bbr,controller")
CLEAN = (LOSSY + ",kernel tcp (cubic),raw tls tcp (cubic),"
         "yamux over tls tcp (cubic),quinn cubic")

# MiB per run at each rate: about 13 s at 10 Mbit/s, 5 s at 100, 2 s at
# 1 Gbit/s on a full link.
MIB = {10: 16, 100: 64, 1000: 256}
# (Mbit/s, RTT ms, loss %, MiB per run)
CELLS = [(mbit, rtt, loss, MIB[mbit]) for mbit in (100, 10, 1000) for rtt in (1, 50, 200)
         for loss in (0, 0.5, 2, 5)]
CELL_TIMEOUT = 20 * 60

# Column order and short names of the table.
SUBJECTS = [
    ("kernel TCP (cubic), 1 connection", "kernel CUBIC"),
    ("kernel TCP (bbr), 1 connection", "kernel BBR"),
    ("raw TLS TCP (cubic), 1 connection", "raw TLS CUBIC"),
    ("raw TLS TCP (bbr), 1 connection", "raw TLS BBR"),
    ("rust-yamux over TLS TCP (cubic), 1 stream", "yamux CUBIC"),
    ("rust-yamux over TLS TCP (bbr), 1 stream", "yamux BBR"),
    ("DWCP over TCP lanes (4, bbr)", "DWCP TCP lanes (retrans)"),
    ("DWCP over QUIC (quinn CUBIC)", "DWCP quinn CUBIC"),
    ("DWCP over QUIC (quinn BBR)", "DWCP quinn BBR (retrans, queue)"),
    ("DWCP over QUIC (DWCP controller)", "DWCP controller (retrans, queue, wire)"),
]


def cell_text(row):
    """One table entry: goodput in % of the link, the DWCP subjects'
    retransmissions and queue, and whether the CPU bound the transfer."""
    text = f"{row['of_link'] * 100:.1f}"
    extra = []
    if row["subject"].startswith("DWCP") and "CUBIC" not in row["subject"]:
        if row.get("retrans_pct") is not None:
            extra.append(f"{row['retrans_pct']:.1f} %")
        if "QUIC" in row["subject"] and row.get("queue_ms_p50") is not None:
            extra.append(f"{row['queue_ms_p50']:.0f} ms")
        if "controller" in row["subject"]:
            extra.append(f"{row['wire_of_link'] * 100:.1f}")
    if extra:
        text += f" ({', '.join(extra)})"
    if row.get("cpu_bound"):
        busy = max(row.get("driver_busy") or 0, row.get("machine_busy") or 0)
        text += f" CPU {busy * 100:.0f} %"
    return text


def table(path):
    rows = json.load(open(path))
    at = {(r["mbit"], r["rtt_ms"], r["loss_pct"], r["subject"]): r for r in rows}
    cells = list(dict.fromkeys((r["mbit"], r["rtt_ms"], r["loss_pct"], r["mib"]) for r in rows))
    print("| link | MiB | " + " | ".join(short for _, short in SUBJECTS) + " |")
    print("|---|---|" + "---|" * len(SUBJECTS))
    for mbit, rtt, loss, mib in cells:
        name = f"{mbit} Mbit/s" if mbit < 1000 else f"{mbit // 1000} Gbit/s"
        entries = []
        for subject, _ in SUBJECTS:
            r = at.get((mbit, rtt, loss, subject))
            entries.append(cell_text(r) if r else "–")
        print(f"| {name}, {rtt} ms, {loss:g} % | {mib} | " + " | ".join(entries) + " |")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        table(sys.argv[2])
        return
    opts = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    rates = {int(r) for r in opts["--rates"].split(",")} if "--rates" in opts else None
    rtts = {int(r) for r in opts["--rtts"].split(",")} if "--rtts" in opts else None
    out = []
    partial = open("wan-matrix.partial.jsonl", "a")
    for mbit, rtt, loss, mib in CELLS:
        if (rates is not None and mbit not in rates) or (rtts is not None and rtt not in rtts):
            continue
        only = CLEAN if loss == 0 else LOSSY
        cmd = [BENCH, "wan", "--tun", "--mbit", str(mbit), "--rtt-ms", str(rtt),
               "--loss-pct", str(loss), "--mib", str(mib), "--only", only, "--json"]
        print(" ".join(cmd), file=sys.stderr, flush=True)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=CELL_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"  failed: no result within {CELL_TIMEOUT} s", file=sys.stderr, flush=True)
            continue
        if r.returncode != 0:
            print(f"  failed: {r.stderr.strip()[-400:]}", file=sys.stderr, flush=True)
            continue
        start = r.stdout.find("[")
        for row in json.loads(r.stdout[start:]):
            row.update(mbit=mbit, rtt_ms=rtt, loss_pct=loss, mib=mib)
            out.append(row)
            partial.write(json.dumps(row) + "\n")
            partial.flush()
            print(f"  {cell_text(row):<40} {row['subject']}", file=sys.stderr, flush=True)
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
