#!/usr/bin/env python3
"""Draws the benchmark plots as SVG, from the JSON the harness prints.

    dwcp-bench streams > docs/benchmarks/streams.json
    dwcp-bench compression --json > docs/benchmarks/compression.json
    sudo python3 scripts/wan_matrix.py > docs/benchmarks/wan-matrix.json
    python3 docs/benchmarks/plot.py

Plain SVG, no plotting library needed.
"""
import json
import math
import pathlib

HERE = pathlib.Path(__file__).parent
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf",
          "#e377c2", "#7f7f7f", "#bcbd22"]


def svg(width, height, body):
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n'
        + "\n".join(body)
        + "\n</svg>\n"
    )


def line_chart(path, title, xs, series, xlabel, ylabel, log_x=False):
    W, H, L, R, T, B = 640, 400, 70, 170, 40, 50
    pw, ph = W - L - R, H - T - B
    ymax = max(v for _, vals in series for v in vals) * 1.1
    fx = (lambda x: math.log10(x)) if log_x else (lambda x: x)
    x0, x1 = fx(min(xs)), fx(max(xs))
    X = lambda x: L + (fx(x) - x0) / ((x1 - x0) or 1) * pw
    Y = lambda y: T + ph - y / ymax * ph
    body = [f'<text x="{W/2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
            f'<line x1="{L}" y1="{T+ph}" x2="{L+pw}" y2="{T+ph}" stroke="black"/>',
            f'<line x1="{L}" y1="{T}" x2="{L}" y2="{T+ph}" stroke="black"/>',
            f'<text x="{L+pw/2}" y="{H-10}" text-anchor="middle">{xlabel}</text>',
            f'<text x="18" y="{T+ph/2}" text-anchor="middle" transform="rotate(-90 18 {T+ph/2})">{ylabel}</text>']
    for i in range(6):
        y = ymax * i / 5
        body.append(f'<line x1="{L-4}" y1="{Y(y):.1f}" x2="{L+pw}" y2="{Y(y):.1f}" stroke="#ddd"/>')
        body.append(f'<text x="{L-8}" y="{Y(y)+4:.1f}" text-anchor="end">{y:.0f}</text>')
    for x in xs:
        body.append(f'<text x="{X(x):.1f}" y="{T+ph+18}" text-anchor="middle">{x:g}</text>')
    for k, (name, vals) in enumerate(series):
        c = COLORS[k % len(COLORS)]
        pts = " ".join(f"{X(x):.1f},{Y(v):.1f}" for x, v in zip(xs, vals))
        body.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, v in zip(xs, vals):
            body.append(f'<circle cx="{X(x):.1f}" cy="{Y(v):.1f}" r="3" fill="{c}"/>')
        body.append(f'<rect x="{L+pw+15}" y="{T+10+k*20}" width="12" height="12" fill="{c}"/>')
        body.append(f'<text x="{L+pw+32}" y="{T+20+k*20}">{name}</text>')
    path.write_text(svg(W, H, body))


def streams():
    rows = json.loads((HERE / "streams.json").read_text())
    xs = [r["streams"] for r in rows]
    line_chart(HERE / "streams.svg", "Loopback throughput vs concurrent streams", xs,
               [("DWCP over QUIC", [r["dwcp_quic"] for r in rows]),
                ("DWCP over TCP lanes", [r["dwcp_tcp"] for r in rows]),
                ("raw quinn", [r["raw_quinn"] for r in rows])],
               "concurrent streams (log scale)", "MB/s (aggregate)", log_x=True)


def bar_chart(path, title, groups, series, ylabel, marks=()):
    """Grouped bars: one group per entry of `groups`, one bar per series.
    `marks` holds (group, series) pairs whose bar gets a "CPU" label: the
    CPU, not the link, bound that transfer."""
    W, H, L, R, T, B = 640, 400, 70, 230, 40, 50
    pw, ph = W - L - R, H - T - B
    ymax = max(v for _, vals in series for v in vals if v is not None) * 1.1
    body = [f'<text x="{W/2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
            f'<line x1="{L}" y1="{T+ph}" x2="{L+pw}" y2="{T+ph}" stroke="black"/>',
            f'<text x="18" y="{T+ph/2}" text-anchor="middle" transform="rotate(-90 18 {T+ph/2})">{ylabel}</text>']
    gw = pw / len(groups)
    bw = gw * 0.8 / len(series)
    for i in range(6):
        y = ymax * i / 5
        yy = T + ph - y / ymax * ph
        body.append(f'<line x1="{L}" y1="{yy:.1f}" x2="{L+pw}" y2="{yy:.1f}" stroke="#ddd"/>')
        body.append(f'<text x="{L-8}" y="{yy+4:.1f}" text-anchor="end">{y:.0f}</text>')
    for g, group in enumerate(groups):
        body.append(f'<text x="{L+g*gw+gw/2:.1f}" y="{T+ph+18}" text-anchor="middle">{group}</text>')
        for k, (name, vals) in enumerate(series):
            v = vals[g]
            if v is None:
                continue
            h = v / ymax * ph
            x = L + g * gw + gw * 0.1 + k * bw
            body.append(f'<rect x="{x:.1f}" y="{T+ph-h:.1f}" width="{bw*0.9:.1f}" height="{h:.1f}" fill="{COLORS[k % len(COLORS)]}"/>')
            if (g, k) in marks:
                cx, cy = x + bw * 0.45, T + ph - h - 3
                body.append(f'<text x="{cx:.1f}" y="{cy:.1f}" font-size="8" text-anchor="start" '
                            f'transform="rotate(-90 {cx:.1f} {cy:.1f})">CPU</text>')
    for k, (name, _) in enumerate(series):
        body.append(f'<rect x="{L+pw+15}" y="{T+10+k*20}" width="12" height="12" fill="{COLORS[k % len(COLORS)]}"/>')
        body.append(f'<text x="{L+pw+32}" y="{T+20+k*20}">{name}</text>')
    if marks:
        body.append(f'<text x="{L+pw+15}" y="{T+20+len(series)*20+10}" font-size="10">'
                    'CPU: the CPU bound it</text>')
    path.write_text(svg(W, H, body))


def compression():
    rows = json.loads((HERE / "compression.json").read_text())
    for corpus in dict.fromkeys(r["corpus"] for r in rows):
        sel = [r for r in rows if r["corpus"] == corpus]
        rates = [r["rate"] for r in sel]
        names = [n for n, _ in sel[0]["mbps"]]
        # Each rate's figures relative to its best fixed codec (100 %), so the
        # rates, whose absolute figures differ by orders of magnitude, compare.
        best = [max(v for n, v in r["mbps"] if n != "adaptive") for r in sel]
        series = [(n, [dict(r["mbps"])[n] / b * 100 for r, b in zip(sel, best)]) for n in names]
        slug = corpus.split()[0].replace("/", "-")
        bar_chart(HERE / f"compression-{slug}.svg",
                  f"Application rate vs best fixed codec (=100%): {corpus}",
                  rates, series, "% of the best fixed codec")


def wan():
    """One chart per link rate and RTT: goodput as % of the link by loss,
    transfers the CPU bound marked."""
    path = HERE / "wan-matrix.json"
    if not path.exists():
        return
    rows = json.loads(path.read_text())
    for mbit, rtt in sorted({(r["mbit"], r["rtt_ms"]) for r in rows}):
        sel = [r for r in rows if r["mbit"] == mbit and r["rtt_ms"] == rtt]
        losses = sorted({r["loss_pct"] for r in sel})
        names = list(dict.fromkeys(r["subject"] for r in sel))
        at = {(r["subject"], r["loss_pct"]): r for r in sel}
        series = [(n.replace(", 1 connection", "").replace("DWCP over ", "DWCP "),
                   [at[(n, l)]["of_link"] * 100 if (n, l) in at else None for l in losses])
                  for n in names]
        marks = {(g, k) for k, n in enumerate(names) for g, l in enumerate(losses)
                 if at.get((n, l), {}).get("cpu_bound")}
        rate = f"{mbit} Mbit/s" if mbit < 1000 else f"{mbit // 1000} Gbit/s"
        bar_chart(HERE / f"wan-{mbit}mbit-{rtt}ms.svg",
                  f"Goodput, {rate}, {rtt} ms RTT, by loss % (TUN delay line)",
                  [f"{l:g} %" for l in losses], series, "% of the link", marks)


if __name__ == "__main__":
    streams()
    compression()
    wan()
