"""Fuzzing the REST API from its own OpenAPI document (schemathesis).

A real server on a fresh SQLite file, some data in it (a currency, a customer with a
grant, a feature, a webhook endpoint) so that generated requests reach past "not found",
then `st run` against the document it serves at /schema/openapi.json: the examples,
coverage and fuzzing phases within a fixed time budget, with the `not_a_server_error`
check. No answer may be a 5xx, and the server's log must hold no error. The budget
(FUZZ_SECONDS, default 60) keeps CI well inside its limit; set it higher to dig deeper.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SECONDS = int(os.environ.get("FUZZ_SECONDS", "60"))
KEY = "fuzz-key-" + secrets.token_hex(8)


def _seed(server: Any) -> None:
    with server.http(KEY) as http:
        for method, path, body in [
            ("POST", "/api/v1/credits/custom-currencies",
             {"id": "credits", "displayName": "Credits"}),
            ("POST", "/api/v1/customers", {"id": "fuzz-customer", "name": "Fuzz"}),
            ("POST", "/api/v1/credits/grants",
             {"customerId": "fuzz-customer", "currencyId": "credits", "amount": 1000,
              "displayName": "seed", "grantType": "PAID"}),
            ("POST", "/api/v1/features",
             {"id": "fuzz-feature", "displayName": "Fuzz", "featureType": "NUMBER",
              "meterType": "INCREMENTAL"}),
            ("POST", "/api/v1/webhooks/endpoints",
             {"url": "http://127.0.0.1:9/hook", "eventTypes": ["credits.granted"]}),
        ]:
            answer = http.request(method, path, json=body)
            assert answer.status_code < 300, (path, answer.text)


def test_no_request_answers_a_server_error(make_server: Callable[..., Any],
                                           tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    if st is None:
        if os.environ.get("CI") == "true":
            pytest.fail("schemathesis (`st`) is not installed")
        pytest.skip("schemathesis (`st`) is not installed")
    server = make_server(api_keys=KEY, env={"CREDITD_WEBHOOKS_ALLOW_PRIVATE": "true"}).start()
    _seed(server)
    run = subprocess.run(
        [st, "run", f"{server.url}/schema/openapi.json",
         "--checks", "not_a_server_error",
         "--phases", "examples,coverage,fuzzing",
         "--max-time", str(SECONDS),
         "--header", f"X-API-KEY: {KEY}",
         "--seed", "20261205",
         "--request-timeout", "10",
         "--suppress-health-check", "all",
         "--continue-on-failure",
         "--no-color"],
        capture_output=True, text=True, timeout=SECONDS + 240, cwd=tmp_path)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    # It did test: every operation of the document, with thousands of generated requests
    # (a document that failed to load would "pass" with none).
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", report)
    generated = re.search(r"(\d+) generated", report)
    assert selected and generated, report[-3000:]
    assert int(selected[3]) == int(selected[2]) >= 100, selected[0]
    assert int(generated[1]) >= 1000, generated[0]
    errors = [line for line in server.lines
              if '"level": "error"' in line or "Traceback" in line or "internal error" in line]
    assert not errors, errors[:20]
