"""`clarion send`, as an operator runs it (a subprocess), against a real running Clarion: it
sends through the Python client and prints the answer; a refusal is one line with the stable
code and the request id; Clarion out of reach is one line naming the URL; never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stack import Stack, free_port, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(test_settings: Any, simulator: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(test_settings, simulator, tmp_path_factory.mktemp("send")) as running:
        yield running


def clarion_send(*args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    if key:
        env["CLARION_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "clarion.cli", "send", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_it_sends_and_with_wait_prints_the_notification_once_it_left_the_queue(
        stack: Stack) -> None:
    user_id, template_key = stack.code_user_and_template()

    done = clarion_send("--user", user_id, "--template", template_key, "--var", "code=0042",
                        "--channel", "email", "--url", stack.base_url, "--wait",
                        key=stack.api_key)

    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["status"] == "sent"
    assert shown["channels"]["email"]["status"] == "sent"
    assert "Traceback" not in done.stderr


def test_a_refusal_is_one_line_with_its_code_and_request_id(stack: Stack) -> None:
    done = clarion_send("--user", "nobody-at-all", "--template", "welcome",
                        "--url", stack.base_url, key=stack.api_key)

    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "user_not_found" in line and "request" in line
    assert done.stdout == ""


def test_clarion_out_of_reach_is_one_line_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = clarion_send("--user", "u", "--template", "t", "--url", url, key="some-key")

    assert done.returncode == 7
    [line] = done.stderr.strip().splitlines()
    assert url in line and "--url" in line
    assert "Traceback" not in done.stderr + done.stdout


def test_without_a_key_or_with_a_bad_var_it_says_what_to_give() -> None:
    no_key = clarion_send("--user", "u", "--template", "t")
    bad_var = clarion_send("--user", "u", "--template", "t", "--var", "novalue", key="k")

    assert (no_key.returncode, bad_var.returncode) == (2, 2)
    assert "CLARION_API_KEY" in no_key.stderr
    assert "KEY=VALUE" in bad_var.stderr
