"""The API fuzzed from its own OpenAPI schema (schemathesis, property-based, bounded): whatever a client sends,
no 5xx, every status it answers declared, every response valid against the schema, and inputs the schema rules
out refused. In-process (ASGI), on the suite's tiny model; the key-guarded app as well."""

import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.errors import Unsatisfiable

schemathesis = pytest.importorskip("schemathesis")

from schemathesis import GenerationMode, checks  # noqa: E402

from nextlab.checkpoint import load_checkpoint  # noqa: E402
from nextlab.serve import Limits, create_app  # noqa: E402
from nextlab.serve.app import ApiKey, BodyLimit  # noqa: E402

KEY = "fuzz-key"
# positive_data_acceptance is left out: the server's limits (max_tokens, prompt lengths, a chat model for messages)
# are its configuration, not its schema, so schema-valid requests beyond them are rightly refused with 400
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.negative_data_rejection]


@pytest.fixture(scope="module")
def app(tiny_checkpoint):
    limits = Limits(max_tokens=16)
    return ApiKey(BodyLimit(create_app(load_checkpoint(tiny_checkpoint), "tiny", limits), limits.max_body_bytes), KEY)


def test_the_api_survives_fuzzing(app):
    from hypothesis import given

    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Authorization": f"Bearer {KEY}"})
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /v1/completions", "POST /tokenize", "POST /api/score"}
    for operation, mode in itertools.product(operations, GenerationMode):  # schema-valid requests, and invalid ones

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        def fuzz(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS)

        try:
            fuzz()
        except Unsatisfiable:  # an operation that takes nothing has no invalid request to make
            assert mode == GenerationMode.NEGATIVE, operation.path
