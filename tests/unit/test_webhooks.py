"""Webhooks' pure parts: which callback URLs are taken, which addresses may be called, the
backoff, the signature, and the event a task's end makes."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timezone

import pytest
from standardwebhooks import Webhook

from ml_celery.webhooks import _event, backoff_s, is_forbidden, resolve_target
from ml_common.errors import InvalidCallbackUrl, UnsafeWebhookTarget
from ml_common.settings import Settings
from ml_common.webhooks import Delivery, check_callback_url, signed_headers, signing_secret


@pytest.mark.parametrize(
    "url", ["https://example.com/hook", "http://example.com:8080/h?x=1", "https://[2001:db8::1]/"]
)
def test_http_and_https_urls_are_taken(url: str) -> None:
    assert check_callback_url(url) == url


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "gopher://x/", "https://a:b@example.com/", "https://a@example.com/",
     "https:///x", "https://example.com:99999/", "https://e xample.com/", "h" * 3000],
)  # fmt: skip
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidCallbackUrl):
        check_callback_url(url)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "169.254.1.1",
     "0.0.0.0", "::1", "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1", "100.64.0.1",
     "224.0.0.1", "198.18.0.1"],
)  # fmt: skip
def test_internal_addresses_are_forbidden(address: str) -> None:
    assert is_forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::1111", "1.1.1.1"])
def test_public_addresses_are_not(address: str) -> None:
    assert not is_forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "::127.0.0.1", "::10.0.0.1", "::169.254.169.254",  # IPv4-compatible
        "::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:192.168.0.1",  # mapped
        "::ffff:0:127.0.0.1", "::ffff:0:7f00:1", "::ffff:0:a00:1",  # SIIT translated
        "64:ff9b::127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",  # NAT64
        "64:ff9b::192.168.1.1", "64:ff9b:1::1",  # NAT64, local-use NAT64
        "2002:7f00:1::", "2002:a00:1::1", "2002:a9fe:a9fe::",  # 6to4
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
        "2001:0:a00:1::1",  # Teredo, server 10.0.0.1
        "fec0::1", "fed0::1", "feff::1",  # site-local
    ],
)  # fmt: skip
def test_ipv6_forms_that_embed_a_forbidden_ipv4_are_forbidden(address: str) -> None:
    assert is_forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["64:ff9b::8.8.8.8", "2002:808:808::1"])
def test_ipv6_forms_that_embed_a_public_ipv4_are_not(address: str) -> None:
    assert not is_forbidden(ipaddress.ip_address(address))


def test_a_name_that_resolves_to_loopback_is_refused_unless_allow_listed() -> None:
    with pytest.raises(UnsafeWebhookTarget):
        resolve_target("localhost", 80, [])
    allowed = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    assert resolve_target("localhost", 80, allowed).is_loopback


def test_an_unresolvable_name_is_an_os_error() -> None:
    with pytest.raises(OSError):
        resolve_target("no-such-host.invalid", 80, [])


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    settings = Settings(_env_file=None, webhook_backoff_s=10, webhook_backoff_max_s=100)
    for attempt, ceiling in ((1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (12, 100)):
        waits = [backoff_s(attempt, settings) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)


def test_the_signature_verifies_with_the_owners_secret_only() -> None:
    secret = signing_secret("k" * 32, "owner-1")
    assert secret != signing_secret("k" * 32, "owner-2")
    body = '{"type":"detection.succeeded"}'
    headers = signed_headers(secret, "msg_1", body, datetime.now(timezone.utc))
    assert Webhook(secret).verify(body, headers) == {"type": "detection.succeeded"}


def test_each_end_state_makes_its_event() -> None:
    assert _event("SUCCESS", {"x": 1}) == ("detection.succeeded",
                                           {"status": "succeeded", "result": {"x": 1}})  # fmt: skip
    assert _event("FAILURE", ValueError("bad"))[0] == "detection.failed"  # type: ignore[index]
    assert _event("IGNORED", None) == ("detection.cancelled", {"status": "cancelled"})
    assert _event("RETRY", None) is None


def test_a_delivery_hash_without_its_fields_is_none() -> None:
    assert Delivery.from_hash({"url": "x"}) is None
    made = Delivery.new("https://e.com/", "detection.succeeded", "{}", "o")
    assert made.webhook_id.startswith("msg_")
