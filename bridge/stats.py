"""What the bridge reports about itself: the Status tab's snapshot (/api/stats) and the
Prometheus text of /metrics, from the core's counters. No I/O, no Flask or socketio imports.
"""

from __future__ import annotations

from typing import Any

CHANNEL_METRICS = (  # (metric, Prometheus type, ChannelStats attribute)
    ("publish_rate", "gauge", "publish_rate"), ("delivered_rate", "gauge", "delivered_rate"),
    ("delivered_total", "counter", "delivered"), ("skipped_total", "counter", "skipped"),
    ("missed_total", "counter", "missed"), ("lag_seconds", "gauge", "lag"))


def percentile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) of an ascending list, nearest rank below; None if empty."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def snapshot(core: Any, now_wall: float) -> dict[str, Any]:
    """Everything the Status tab shows, in one snapshot."""
    dev = core.link.device
    kinds = {name: reader.kind for name, reader in (dev.channels.items() if dev else [])}
    rtts = sorted(core.broker.rtts[-200:])
    return {
        "device": core.link.status(now_wall),
        "channels": [
            {"name": name, "kind": kinds.get(name), "publish_rate": round(st.publish_rate, 2),
             "delivered_rate": round(st.delivered_rate, 2), "delivered": st.delivered, "skipped": st.skipped,
             "missed": st.missed, "lag": None if st.lag is None else round(st.lag, 4)}
            for name, st in sorted(core.relay.stats.items())
        ],
        "clients": core.client_rows(),
        "relay": {"ticks": core.ticks, "tick_seconds": round(core.tick_seconds, 6), "max_rate": core.max_rate},
        "commands": {**core.broker.counts, "pending": core.broker.pending,
                     "rtt_p50": percentile(rtts, 0.5), "rtt_p99": percentile(rtts, 0.99)},
        "server_time": now_wall,
    }


def client_rows(hub: Any) -> list[dict[str, Any]]:
    """The clients table (/api/clients): one row per client, its subscriptions to every device
    named by ``device``."""
    rows: dict[str, dict[str, Any]] = {}
    for core in hub.cores.values():
        for row in core.client_rows():
            subs = [{"device": core.link.device_name, **sub} for sub in row["subscriptions"]]
            rows.setdefault(row["id"], {**row, "subscriptions": []})["subscriptions"].extend(subs)
    return list(rows.values())


def prometheus(hub: Any) -> str:
    """The /metrics page (Prometheus text format 0.0.4); a ``device`` label on each device's series."""
    cores = [(c.link.device_name or key, c) for key, c in hub.cores.items()]  # names are [A-Za-z0-9_-]
    lines = ["# HELP monbridge_device_online 1 if the device's heartbeat is fresh.",
             "# TYPE monbridge_device_online gauge"]
    lines += [f'monbridge_device_online{{device="{d}"}} {int(c.link.online)}' for d, c in cores]
    lines += ["# TYPE monbridge_clients gauge", f"monbridge_clients {len(hub.clients)}",
              "# TYPE monbridge_relay_tick_seconds gauge",
              f"monbridge_relay_tick_seconds {max((c.tick_seconds for _, c in cores), default=0.0):.6f}",
              "# TYPE monbridge_commands_total counter"]
    for d, core in cores:
        for outcome, n in core.broker.counts.items():
            lines.append(f'monbridge_commands_total{{device="{d}",outcome="{outcome}"}} {n}')
    if any(core.broker.rtts for _, core in cores):
        lines.append("# TYPE monbridge_command_rtt_seconds summary")
    for d, core in cores:
        rtts = sorted(core.broker.rtts)
        if rtts:
            lines += [f'monbridge_command_rtt_seconds{{device="{d}",quantile="0.5"}} {percentile(rtts, 0.5):.6f}',
                      f'monbridge_command_rtt_seconds{{device="{d}",quantile="0.99"}} {percentile(rtts, 0.99):.6f}']
    for metric, kind, attr in CHANNEL_METRICS:
        lines.append(f"# TYPE monbridge_channel_{metric} {kind}")
        for d, core in cores:
            for name, st in sorted(core.relay.stats.items()):
                value = getattr(st, attr)
                if value is not None:
                    lines.append(f'monbridge_channel_{metric}{{device="{d}",channel="{name}"}} {value:g}')
    return "\n".join(lines) + "\n"

