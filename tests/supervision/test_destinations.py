"""Where status callbacks may go: http(s) only, never inside the network unless allowed."""

from __future__ import annotations

import pytest

from clarion.supervision.destinations import destination_problem, is_private


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.1.2.3", "::1", "10.0.0.5", "172.16.0.1", "192.168.1.1",
    "169.254.169.254", "fe80::1", "fd00::1", "0.0.0.0", "::", "::ffff:127.0.0.1",
    "::ffff:10.0.0.1", "100.64.0.1", "224.0.0.1", "240.0.0.1"])
def test_inside_addresses_are_private(address: str) -> None:
    assert is_private(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_not(address: str) -> None:
    assert not is_private(address)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "https://localhost/hook", "http://169.254.169.254/latest",
    "http://[::1]/x", "http://10.1.2.3/x", "http://2130706433/x"])  # 2130706433 = 127.0.0.1
def test_a_url_inside_the_network_is_refused_unless_allowed(url: str) -> None:
    problem = destination_problem(url, allow_private=False)
    assert problem is not None and "CLARION_CALLBACKS_ALLOW_PRIVATE" in problem
    assert destination_problem(url, allow_private=True) is None


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://example.com/x", "only http"), ("file:///etc/passwd", "only http"),
    ("http:///nohost", "no host"), ("https://user:pw@93.184.216.34/x", "credentials"),
    ("http://93.184.216.34:99999/x", "does not parse"), ("gopher://127.0.0.1/", "only http")])
def test_a_url_of_the_wrong_shape_is_refused_even_when_private_is_allowed(url: str,
                                                                         why: str) -> None:
    problem = destination_problem(url, allow_private=True)
    assert problem is not None and why in problem


def test_a_public_address_is_accepted() -> None:
    assert destination_problem("https://93.184.216.34/hooks", allow_private=False) is None


def test_a_name_that_does_not_resolve_is_refused() -> None:
    problem = destination_problem("https://no-such-host.invalid/x", allow_private=False)
    assert problem is not None and "does not resolve" in problem
