"""What the operator sees: /metrics in the Prometheus format (read with
prometheus_client's own parser), one log line per request, JSON logs, audit events,
and no secret anywhere in the log."""

from __future__ import annotations

import requests
from support.observability import scrape


def test_metrics_are_served_only_to_allowed_addresses(make_server):
    loopback = make_server(in_thread=True)
    scrape(loopback)  # 127.0.0.1 by default
    # The same loopback peer, but a trusted proxy says the client is on the internet.
    outside = requests.get(loopback.url("/metrics"), headers={"X-Forwarded-For": "203.0.113.7"}, timeout=10)
    assert outside.status_code == 403
    assert outside.json()["error"] == "access_denied"
    assert "mcp_oauth" not in outside.text

    nobody = make_server(in_thread=True, OAUTH_METRICS_ALLOW="")
    assert requests.get(nobody.url("/metrics"), timeout=10).status_code == 403

    network = make_server(in_thread=True, OAUTH_METRICS_ALLOW="203.0.113.0/24")
    assert requests.get(network.url("/metrics"), timeout=10).status_code == 403
    scrape(network, **{"X-Forwarded-For": "203.0.113.7"})
    # An untrusted peer cannot claim an allowed address.
    spoofed = make_server(in_thread=True, OAUTH_METRICS_ALLOW="203.0.113.0/24", OAUTH_TRUSTED_PROXIES="10.9.9.9")
    blocked = requests.get(spoofed.url("/metrics"), headers={"X-Forwarded-For": "203.0.113.7"}, timeout=10)
    assert blocked.status_code == 403


def test_a_request_id_from_a_trusted_proxy_is_kept(make_server):
    server = make_server(in_thread=True)
    kept = requests.get(server.url("/healthz"), headers={"X-Request-Id": "nginx-4f2a"}, timeout=10)
    assert kept.headers["X-Request-Id"] == "nginx-4f2a"
    forged = requests.get(server.url("/healthz"), headers={"X-Request-Id": "a b\tc"}, timeout=10)
    assert forged.headers["X-Request-Id"] != "a b\tc" and len(forged.headers["X-Request-Id"]) == 16
    untrusted = make_server(in_thread=True, OAUTH_TRUSTED_PROXIES="10.9.9.9")
    ignored = requests.get(untrusted.url("/healthz"), headers={"X-Request-Id": "nginx-4f2a"}, timeout=10)
    assert ignored.headers["X-Request-Id"] != "nginx-4f2a"
