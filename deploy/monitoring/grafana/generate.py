#!/usr/bin/env python3
"""Writes dwcp-dashboard.json: the Grafana dashboard of the DWCP protocol.

Run it after changing a panel; deploy/verify checks every query with promtool
and that the committed JSON matches this script's output.
"""
import json
import pathlib

SEL = 'instance=~"$instance", peer=~"$peer"'

PANELS = [
    # (title, unit, [(legend, expr)], width)
    ("Peers connected", "none", [("{{instance}} → {{peer}} ({{transport}})", f'dwcp_peer_up{{{SEL}}}')], 8),
    ("Streams open vs limit", "none", [
        ("{{instance}} → {{peer}} open", f'dwcp_streams_active{{{SEL}}}'),
        ("{{instance}} → {{peer}} limit", f'dwcp_streams_max{{{SEL}}}'),
    ], 8),
    ("Tunnelled connections", "none", [("{{instance}} → {{peer}}", f'dwcp_tunnel_streams_active{{{SEL}}}')], 8),
    ("Bandwidth per class: allocated vs used", "Bps", [
        ("{{peer}}/{{class}} allocated", f'sum by (peer, class) (dwcp_bandwidth_allocated_bytes{{{SEL}}})'),
        ("{{peer}}/{{class}} used", f'sum by (peer, class) (dwcp_bandwidth_used_bytes{{{SEL}}})'),
        ("{{peer}} capacity", f'sum by (peer) (dwcp_bandwidth_capacity_bytes{{{SEL}}})'),
    ], 12),
    ("Wire throughput", "bps", [
        ("{{peer}} sent", f'sum by (peer) (rate(dwcp_bytes_sent_total{{{SEL}}}[1m])) * 8'),
        ("{{peer}} received", f'sum by (peer) (rate(dwcp_bytes_received_total{{{SEL}}}[1m])) * 8'),
    ], 12),
    ("Compression ratio per class", "none", [("{{peer}}/{{class}}", f'dwcp_compression_ratio{{{SEL}}}')], 12),
    ("Compression ratio per codec (5 m)", "none", [(
        "{{codec}}",
        'sum by (codec) (rate(dwcp_compression_raw_bytes_total{instance=~"$instance"}[5m]))'
        ' / sum by (codec) (rate(dwcp_compression_wire_bytes_total{instance=~"$instance"}[5m]) > 0)',
    )], 12),
    ("RTT", "ms", [
        ("{{instance}} → {{peer}}", f'dwcp_latency_milliseconds{{{SEL}}}'),
        ("p99 over 5 m", f'histogram_quantile(0.99, sum by (le, peer) (rate(dwcp_rtt_milliseconds_bucket{{{SEL}}}[5m])))'),
    ], 12),
    ("Packet loss", "percentunit", [("{{instance}} → {{peer}}", f'dwcp_packet_loss_rate{{{SEL}}}')], 12),
    ("Errors by kind", "ops", [("{{kind}}", 'sum by (kind) (rate(dwcp_errors_total{instance=~"$instance"}[5m]))')], 8),
    ("Stream refusals and resets", "ops", [
        ("refused: {{reason}}", f'sum by (reason) (rate(dwcp_stream_refusals_total{{{SEL}}}[5m]))'),
        ("resets {{direction}}", f'sum by (direction) (rate(dwcp_stream_resets_total{{{SEL}}}[5m]))'),
    ], 8),
    ("Reconnects (1 h)", "none", [("{{peer}}", f'sum by (peer) (increase(dwcp_reconnects_total{{{SEL}}}[1h]))')], 8),
]


def panel(i, title, unit, targets, width, x, y):
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend}
            for j, (legend, expr) in enumerate(targets)
        ],
    }


def dashboard():
    panels, x, y = [], 0, 0
    for i, (title, unit, targets, width) in enumerate(PANELS):
        if x + width > 24:
            x, y = 0, y + 8
        panels.append(panel(i, title, unit, targets, width, x, y))
        x += width
    var = lambda name, query: {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "current": {"text": "All", "value": "$__all"},
    }
    return {
        "title": "DWCP protocol",
        "uid": "dwcp-protocol",
        "tags": ["dwcp"],
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "current": {}},
            var("instance", "label_values(dwcp_build_info, instance)"),
            var("peer", 'label_values(dwcp_peer_up{instance=~"$instance"}, peer)'),
        ]},
        "panels": panels,
    }


if __name__ == "__main__":
    out = pathlib.Path(__file__).with_name("dwcp-dashboard.json")
    out.write_text(json.dumps(dashboard(), indent=2) + "\n")
