"""The OpenAPI document: served, valid OpenAPI 3.1, and true to the URL conf and the views."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import URLPattern
from django.utils import timezone
from openapi_spec_validator import validate

from scheduling import job, openapi, tokens, urls
from scheduling.models import Execution
from scheduling.store import JobStore
from scheduling.sync import sync
from tests.support import jobs

API = "/scheduling/api"
EXAMPLE_JOB = str(openapi.JOB_ID["example"])
EXAMPLE_RUN = 1


def routes() -> dict[str, list[str]]:
    """The API's routes as OpenAPI paths, each with the methods its view answers."""
    found = {}
    for pattern in urls.urlpatterns:
        assert isinstance(pattern, URLPattern)
        route = str(pattern.pattern)
        if route.startswith("api/") and pattern.name != "api-not-found":
            callback: Any = pattern.callback  # http_method(s) set by scheduling.api
            methods = getattr(callback, "http_methods", None) or [callback.http_method]
            found["/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)] = [method.lower() for method in methods]
    return found


@pytest.fixture
def document(client: Client, db: None) -> dict:
    response = client.get(f"{API}/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    return response.json()


def test_the_document_is_valid_openapi_3_1_and_served_to_anyone(document: dict) -> None:
    validate(document)

    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "/scheduling"}]
    assert set(document["components"]["securitySchemes"]) == {"token", "session"}


def test_the_document_lists_exactly_the_routes_of_the_url_conf_with_their_methods(document: dict) -> None:
    assert {path: list(item) for path, item in document["paths"].items()} == routes()


def test_every_operation_documents_its_errors_with_the_one_error_shape(document: dict) -> None:
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "code", "field"]
    for path, item in document["paths"].items():
        for operation in item.values():
            assert "405" in operation["responses"], path
            if operation.get("security") != []:  # all but the document itself
                assert {"401", "403", "500"} <= set(operation["responses"]), path


def test_each_path_parameter_is_declared(document: dict) -> None:
    for path, item in document["paths"].items():
        for operation in item.values():
            declared = {
                parameter["name"]
                for parameter in operation.get("parameters", [])
                if parameter["in"] == "path"
            }
            assert declared == set(re.findall(r"{(\w+)}", path)), path


@pytest.mark.processes
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the HTTP contract is fuzzed once, in the PostgreSQL cells"
)
@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_nothing_wrong_against_a_live_server(
    live_server: Any, registry: dict, tmp_path: Path
) -> None:
    """Every operation, all of Schemathesis' checks, a fixed number of examples from a fixed seed.

    Bounded so that it takes about a minute and a half; it runs once per matrix, on PostgreSQL.
    """
    job(interval=300, id=EXAMPLE_JOB)(jobs.succeed)
    job(cron="0 3 * * *", id="other")(jobs.succeed)
    sync(JobStore(), registry.values())
    Execution.objects.create(
        pk=EXAMPLE_RUN, job_id=EXAMPLE_JOB, status="succeeded", scheduled_at=timezone.now()
    )
    user = User.objects.create_superuser("fuzzer", password="pw")
    key = tokens.create(user, "schemathesis")[1]

    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            f"--config-file={Path(__file__).with_name('schemathesis.toml')}",
            "run",
            f"{live_server.url}{API}/openapi.json",
            "--checks=all",
            f"--header=Authorization: Bearer {key}",
            "--max-examples=10",
            "--seed=1",
            "--workers=1",
            "--no-shrink",
            "--request-timeout=30",
            "--suppress-health-check=all",
            f"--report-dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )

    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
