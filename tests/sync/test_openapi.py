"""The replica's published contract (docs/openapi.json): the app serves exactly it, and
fuzzing the app from it (schemathesis: valid and invalid requests) finds no 500."""

import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from starlette.testclient import TestClient

from sync.api import openapi_document
from sync.app import make_app
from sync.config import ReplicaConfig
from tests.helpers.serving_fakes import OfflineReplica

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
REGENERATE = ".venv/bin/streamtrain serve --openapi > docs/openapi.json"


def _app():
    replica = OfflineReplica(ReplicaConfig(model="ctr", port=0))  # default limits, as published
    replica.commit(1, list(range(50)))
    return make_app(replica)


def test_app_serves_the_checked_in_openapi_document():
    with TestClient(_app()) as c:
        served = c.get("/openapi.json").json()
    assert served == json.loads(DOC.read_text()), f"the contract changed: run `{REGENERATE}` and review"
    assert served == openapi_document()  # the default config's limits


schema = schemathesis.openapi.from_path(DOC)
schema.app = _app()


@pytest.mark.filterwarnings("ignore")
@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_app_fuzzed_from_its_openapi_document_never_answers_500(case):
    response = case.call()
    # the strict conformance checks too, except that valid-by-schema instances may still
    # be refused (a dense list of the wrong size for this model is a 400, by design)
    case.validate_response(response, additional_checks=[not_a_server_error],
                           excluded_checks=[schemathesis.checks.positive_data_acceptance])
    assert response.status_code < 500, response.text
