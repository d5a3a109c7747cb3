#!/usr/bin/env python3
"""Runs `dwcp-bench wan --tun` over a matrix of links and writes the results
as JSON (one object per cell and subject) for docs/benchmarks/plot.py.

    sudo python3 scripts/wan_matrix.py > docs/benchmarks/wan-matrix.json

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

# (Mbit/s, RTT ms, loss %, MiB per run)
CELLS = [(100, rtt, loss, 64) for rtt in (1, 50, 200) for loss in (0, 0.5, 2, 5)]
CELLS += [(10, 50, loss, 16) for loss in (0, 2)]
CELLS += [(1000, rtt, 0, 256) for rtt in (1, 50)]


def main():
    out = []
    for mbit, rtt, loss, mib in CELLS:
        only = CLEAN if loss == 0 else LOSSY
        cmd = [BENCH, "wan", "--tun", "--mbit", str(mbit), "--rtt-ms", str(rtt),
               "--loss-pct", str(loss), "--mib", str(mib), "--only", only, "--json"]
        print(" ".join(cmd), file=sys.stderr, flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"  failed: {r.stderr.strip()[-400:]}", file=sys.stderr)
            continue
        start = r.stdout.find("[")
        for row in json.loads(r.stdout[start:]):
            row.update(mbit=mbit, rtt_ms=rtt, loss_pct=loss, mib=mib)
            out.append(row)
            print(f"  {row['subject']:<40} {row['of_link']*100:5.1f} % of the link",
                  file=sys.stderr, flush=True)
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
