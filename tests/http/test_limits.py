"""What anyone can create without logging in is bounded in memory."""

from __future__ import annotations


def test_password_guesses_from_one_ipv6_64_count_as_one_network(server):
    """Any address of a /64 is one subscriber's (the test speaks for the client through
    a trusted proxy, loopback): ten wrong passwords for a name from ten addresses of
    one /64, then the eleventh, from yet another, waits; another /64 does not."""
    import requests
    from support.oauth import csrf_of

    session = requests.Session()
    token = csrf_of(session.get(server.url("/login"), timeout=10).text)

    def guess(address: str, password: str = "wrong") -> requests.Response:
        return session.post(
            server.url("/login"),
            data={"csrf_token": token, "username": "alice", "password": password},
            headers={"X-Forwarded-For": address},
            allow_redirects=False,
            timeout=10,
        )

    assert [guess(f"2001:db8:1:2::{n:x}").status_code for n in range(1, 11)] == [401] * 10
    refused = guess("2001:db8:1:2:ffff:ffff:ffff:fffe")
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 900
    assert guess("2001:db8:1:3::1").status_code == 401  # the next /64 is someone else
