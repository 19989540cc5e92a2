"""Finding: the console's session cookie was `Secure` only when the server itself saw HTTPS,
which it never does behind a TLS-terminating proxy. It is now always `Secure`, unless
`CLARION_CONSOLE_INSECURE_COOKIE=1` is set for plain-HTTP development (`make run`; the browser
tests run with it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.stack import Stack, running_stack

pytestmark = pytest.mark.e2e

SECRET = "cookie-test-secret"


@pytest.fixture(scope="module")
def stack(test_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from pydantic import SecretStr

    with running_stack(test_settings, simulator, tmp_path_factory.mktemp("cookie"),
                       internal_secret=SecretStr(SECRET)) as running:
        yield running


def test_the_console_cookie_is_secure_by_default_even_over_plain_http(stack: Stack) -> None:
    reply = httpx.post(stack.base_url + "/admin/login", data={"credential": SECRET}, timeout=15)

    assert reply.status_code == 303
    attributes = [part.strip().lower() for part in reply.headers["set-cookie"].split(";")]
    assert "secure" in attributes and "httponly" in attributes
    signed_out = httpx.post(stack.base_url + "/admin/logout", timeout=15)
    assert "secure" in signed_out.headers["set-cookie"].lower()
