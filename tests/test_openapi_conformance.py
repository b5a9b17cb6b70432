"""The served API checked against its OpenAPI document by schemathesis: generated requests (valid
and invalid) go to a real server on loopback, and every answer must match the document.

The schema is the generated document (the same one docs/openapi.json holds, which test_http_api
compares with the served copy), so the tests are collected without starting a server.
"""

from __future__ import annotations

import pytest
import schemathesis
from api_server import TOKEN, api_server
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from wukong.service.app import openapi_document

schema = schemathesis.openapi.from_dict(openapi_document())


@schema.auth()
class BearerToken:
    """The server's token, given to schemathesis as auth rather than as a header on every call, so
    the cases it generates without credentials (a dropped `Authorization`) still go out without
    them and must get 401."""

    def get(self, case, context):
        return TOKEN

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module")
def api(cluster):
    with api_server(cluster) as server:
        yield server


@pytest.mark.timeout(60)
@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case, api):
    # A schema-valid body is not always acceptable here: a graph is "any bytes" to the schema but
    # must unpickle to a valid (dsk, keys), and job/upload ids must exist. Such requests get a
    # documented 400/401/404, which every other check still verifies.
    case.call_and_validate(base_url=api.url, timeout=30, excluded_checks=[positive_data_acceptance])
