#!/usr/bin/env python3
"""Summarize results*.jsonl: K x binary -> passed/total, times, max RSS (VmHWM), resume outcomes."""
import json, sys, collections
rows = []
for p in sys.argv[1:] or ["results.jsonl"]:
    rows += [json.loads(l) for l in open(p) if l.strip()]
g = collections.defaultdict(list)
for r in rows:
    g[(r["transport"], r.get("stall_read", 1 << 20) >> 20, r["k"], r["bin"])].append(r)
print("| transport | stall read MiB | K | bin | passed/total | pass times s | hung: bytes got | stalled clients without first read (per run) | max VmHWM A / B MiB | resume (ok/K per run, s) | warn/err lines A,B |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(g):
    rs = g[key]
    ok = [r for r in rs if r.get("measure_ok")]
    times = [r["measure_s"] for r in ok]
    hung = [r.get("measure_bytes") for r in rs if not r.get("measure_ok")]
    tr = f"{min(times):.2f}–{max(times):.2f}" if times else "-"
    ha = max(r.get("rss_a", {}).get("VmHWM", 0) for r in rs)
    hb = max(r.get("rss_b", {}).get("VmHWM", 0) for r in rs)
    sf = ",".join(str(r.get("stalled_first_read_failures")) for r in rs)
    res = "; ".join(f'{r["resume_ok"]}/{r["k"]} {r["resume_s"]}' for r in rs if "resume_ok" in r) or "-"
    we = ",".join(f'{r.get("log_a_warn_err")}/{r.get("log_b_warn_err")}' for r in rs)
    errs = [r.get("error") for r in rs if r.get("error")]
    print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {len(ok)}/{len(rs)} | {tr} | {hung or '-'} | {sf} | {ha} / {hb} | {res} | {we} |" + (f" ERR {errs}" if errs else ""))
