"""schemathesis against the running service (waitress, worker, A1111 simulator): every operation of
/openapi.json with the document's examples, boundary values, generated valid and invalid requests,
then linked calls (submit → get → cancel / delete).

Passes when no answer is a 5xx and every answer (status, Content-Type, headers, body) is what the
document says, auth is enforced where documented and unknown methods get 405 with `Allow`.
Bounded (examples per operation, a fixed seed), so it takes seconds and fails the same way twice.
It runs schemathesis's CLI, whose report (tests/artifacts/schemathesis.txt) shows how to replay
a failure with curl.

Not checked, on purpose:
- positive_data_acceptance: rules beyond the schema answer 422 to schema-valid data by contract
  (limits from the environment, webhook URL safety, opaque cursors, img2img needs an image);
- negative_data_rejection: A1111 compatibility is lenient on purpose (A1111's pydantic v1 turns 7
  into "7" for text fields; unknown fields are accepted and dropped, as A1111 ignores them);
- use_after_free: DELETE /sdapi/v1/jobs/{job_id} cancels a job, which then stays readable.
"""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest
import requests

from tests import harness

SCHEMATHESIS = pathlib.Path(sys.executable).with_name("schemathesis")
REPORT = harness.ROOT / "tests" / "artifacts" / "schemathesis.txt"
MAX_EXAMPLES = 15  # per operation and phase
SEED = 20261126
# Left to their own tests: the 501s of the original proxy's asset and captioning routes (a 5xx by
# contract: this service does not manage model files; tests/unit/test_legacy.py) and the owner's event
# stream, which by design stays open until the client leaves, so every fuzzed call would sit out the
# request timeout (tests/e2e/test_live_e2e.py parses it with an SSE client).
EXCLUDED_PATHS = r"^/legacy/sdapi/v1/(assets|assets/download|florence)$|^/sdapi/v1/events$"
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "ignored_auth",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "ensure_resource_availability",
]


@pytest.fixture(scope="module")
def api_url(tmp_path_factory):
    cluster = harness.Cluster(tmp_path_factory.mktemp("schemathesis"))
    try:
        cluster.start_simulator(gen_seconds=0.05)
        cluster.start_api()
        cluster.start_worker("worker-fuzz")
        yield cluster.api_url
    finally:
        cluster.stop()


@pytest.mark.timeout(300)  # some 60 operations; the CLI itself is cut off at 240 s
def test_every_operation_answers_as_the_document_says(api_url, tmp_path):
    # given the document the running API serves
    document = requests.get(f"{api_url}/openapi.json", timeout=10).json()
    total = sum(len(item) for item in document["paths"].values()) - 1  # it skips GET /openapi.json itself
    operations = total - sum(len(item) for path, item in document["paths"].items() if re.search(EXCLUDED_PATHS, path))
    command = [
        str(SCHEMATHESIS), "run", f"{api_url}/openapi.json",
        "--checks", ",".join(CHECKS),
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
        "--header", f"Authorization: Bearer {harness.TOKEN}",
        "--workers", "1", "--request-timeout", "10", "--max-response-time", "10",
        "--suppress-health-check", "all", "--generation-database", "none", "--no-color",
        "--exclude-path-regex", EXCLUDED_PATHS,
    ]
    # when schemathesis fuzzes every operation (from a scratch directory: it writes reports there)
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(run.stdout + run.stderr)
    # then nothing failed, and every operation was tested
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-4000:]
    assert f"Operations:       {operations} selected / {total} total" in run.stdout
    assert f"Tested: {operations}" in run.stdout


@pytest.mark.parametrize("path, headers", [("/doc/%3B", {}), ("/sdapi/v1/jobs/%3B", harness.AUTH)],
                         ids=["an asset named ;", "a job id ;"])
def test_a_semicolon_in_a_path_parameter_stays_in_it(api_url, path, headers):
    # found by schemathesis: GET /doc/%3B answered Swagger UI's page (the route of /doc), not a 404
    response = requests.get(f"{api_url}{path}", headers=headers, timeout=10)
    assert response.status_code == 404 and response.headers["Content-Type"] == "application/json"
