"""A free local port, and a Prometheus /metrics page read back: for tests at every tier that serve metrics."""

from __future__ import annotations


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """Prometheus text from 127.0.0.1:port/metrics: metric -> {sorted label pairs: value}."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {f.name: {tuple(sorted(s.labels.items())): s.value for s in f.samples} for f in text_string_to_metric_families(text)}
