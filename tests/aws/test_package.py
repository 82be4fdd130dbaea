"""`make package`: Chalice's template merged with infra/template.yaml, linted by cfn-lint (the
Makefile target runs it; a lint error fails the target), and what the deployment must guarantee."""
from __future__ import annotations

import fcntl
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
FUNCTIONS = {"APIHandler": "api_handler", "RunJobs": "run_jobs", "DeliverWebhooks": "deliver_webhooks",
             "TakeSubmissions": "take_submissions", "Sweep": "sweep"}
QUEUE_OF = {"RunJobs": "JobsQueue", "DeliverWebhooks": "WebhooksQueue", "TakeSubmissions": "SubmissionsQueue"}
# `chalice package` keeps its work files in the project (.chalice/): one build at a time per checkout,
# whatever the number of pytest-xdist workers that reach this module.
BUILD_LOCK = ROOT / "build" / ".package.lock"
pytestmark = pytest.mark.timeout(300)  # the build may wait for another worker's


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("package")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # -o setup: the virtualenv running these tests is the one to package with (make test set it up).
    BUILD_LOCK.parent.mkdir(exist_ok=True)
    with BUILD_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run(["make", "-s", "-o", "setup", "package", f"PACKAGE_DIR={out}",
                                 f"VENV={pathlib.Path(sys.executable).parent.parent}"],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"make package failed (cfn-lint runs in it):\n{result.stdout}\n{result.stderr}"
    return out


@pytest.fixture(scope="module")
def template(package) -> dict:
    return yaml.safe_load((package / "sam.yaml").read_text())


@pytest.fixture(scope="module")
def stage() -> dict:
    return json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["prod"]


def resources(template, kind):
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def test_the_package_holds_the_code_and_every_function_of_app_py(package, template):
    names = zipfile.ZipFile(package / "deployment.zip").namelist()
    assert "app.py" in names and "chalicelib/handlers.py" in names and "chalicelib/queue/sqs.py" in names
    assert not any(name.startswith(("tests/", "worker_fn/", "boto3/", "botocore/")) for name in names)
    tag = sys.implementation.cache_tag  # bytecode for the runtime's Python, so cold starts compile nothing
    assert f"chalicelib/__pycache__/handlers.{tag}.pyc" in names and f"app.{tag}.pyc" not in names
    assert f"__pycache__/app.{tag}.pyc" in names and f"pydantic/__pycache__/main.{tag}.pyc" in names
    functions = resources(template, "AWS::Serverless::Function")
    assert {f["Properties"]["Handler"] for f in functions.values()} == {
        "app.app", "app.run_jobs", "app.deliver_webhooks", "app.take_submissions", "app.sweep"}


def test_the_package_leaves_out_what_is_never_read(package):
    names = zipfile.ZipFile(package / "deployment.zip").namelist()
    assert not any(name.startswith(("pip/", "setuptools/")) or name.endswith(".map") for name in names)
    swagger = {name.rsplit("/", 1)[-1] for name in names if name.startswith("swagger_ui_bundle/vendor/")}
    assert swagger == {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"}


LAMBDA_GET = """
import json, sys
sys.path.insert(0, sys.argv[1])
import app
for resource, path, parameters in json.loads(sys.argv[2]):
    event = {"resource": resource, "path": path, "httpMethod": "GET", "headers": {"Host": "x"},
             "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
             "pathParameters": parameters, "stageVariables": None, "body": None, "isBase64Encoded": False,
             "requestContext": {"resourcePath": resource, "httpMethod": "GET", "path": path, "stage": "api"}}
    answer = app.app(event, None)
    print(json.dumps([path, answer["statusCode"], answer["headers"].get("Content-Type"), answer["body"][:40]]))
"""


def test_the_api_runs_from_the_package_alone_as_lambda_runs_it(package, tmp_path):
    """No site-packages (-S): the package holds every module the API imports, the Swagger UI files
    it serves (after pruning) and the response models the document is built from."""
    task = tmp_path / "task"
    zipfile.ZipFile(package / "deployment.zip").extractall(task)
    requests_ = [["/doc/{asset}", "/doc/swagger-ui.css", {"asset": "swagger-ui.css"}],
                 ["/doc/{asset}", "/doc/swagger-ui-bundle.js", {"asset": "swagger-ui-bundle.js"}],
                 ["/openapi.json", "/openapi.json", None], ["/doc", "/doc", None]]
    result = subprocess.run(
        [sys.executable, "-S", "-c", LAMBDA_GET, str(task), json.dumps(requests_)], cwd=task, capture_output=True,
        text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "API_TOKENS": "t",
                                    "DATABASE_URL": f"sqlite:///{tmp_path}/jobs.db"})
    assert result.returncode == 0, result.stderr
    answers = {path: (status, content_type, body) for path, status, content_type, body in
               map(json.loads, result.stdout.splitlines())}
    assert {path: answer[:2] for path, answer in answers.items()} == {
        "/doc/swagger-ui.css": (200, "text/css; charset=utf-8"),
        "/doc/swagger-ui-bundle.js": (200, "application/javascript; charset=utf-8"),
        "/openapi.json": (200, "application/json"), "/doc": (200, "text/html; charset=utf-8")}
    assert answers["/openapi.json"][2].startswith('{"openapi": "3.0.3"')


def test_each_sqs_event_source_reports_batch_item_failures_from_its_own_queue(template):
    for function, queue in QUEUE_OF.items():
        [source] = template["Resources"][function]["Properties"]["Events"].values()
        assert source["Type"] == "SQS"
        assert source["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert source["Properties"]["Queue"] == {"Fn::Sub": f"${{{queue}.Arn}}"}
    worker = template["Resources"]["RunJobs"]["Properties"]["Events"]["RunJobsSqsEventSource"]["Properties"]
    assert worker["BatchSize"] == 1 and worker["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "WorkerConcurrency"}}


def test_every_queue_has_a_dead_letter_queue_and_six_times_its_functions_timeout(template, stage):
    queues = resources(template, "AWS::SQS::Queue")
    for function, queue in QUEUE_OF.items():
        properties = queues[queue]["Properties"]
        timeout = template["Resources"][function]["Properties"]["Timeout"]
        assert timeout == stage["lambda_functions"][FUNCTIONS[function]]["lambda_timeout"]
        assert properties["VisibilityTimeout"] >= 6 * timeout, (queue, properties["VisibilityTimeout"], timeout)
        redrive = properties["RedrivePolicy"]
        assert redrive["maxReceiveCount"] >= 1
        assert redrive["deadLetterTargetArn"]["Fn::GetAtt"][0] in queues


def test_per_function_timeout_and_memory_come_from_the_prod_stage(template, stage):
    for function, name in FUNCTIONS.items():
        properties = template["Resources"][function]["Properties"]
        wanted = stage["lambda_functions"][name]
        assert (properties["Timeout"], properties["MemorySize"]) == (wanted["lambda_timeout"],
                                                                      wanted["lambda_memory_size"])
    assert template["Resources"]["RunJobs"]["Properties"]["Timeout"] == 900  # Lambda's most


def test_each_function_has_its_own_least_privilege_role(template):
    roles = resources(template, "AWS::IAM::Role")
    used = [template["Resources"][f]["Properties"]["Role"]["Fn::GetAtt"][0] for f in FUNCTIONS]
    assert len(set(used)) == len(FUNCTIONS) and set(used) <= set(roles)
    for role in roles.values():
        for policy in role["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                if "Fn::If" in statement:  # the optional Secrets Manager statement
                    statement = statement["Fn::If"][1]
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                assert not any(a == "*" or a.endswith(":*") for a in actions), actions
                assert statement["Resource"] != "*", statement
    worker = json.dumps(roles["WorkerRole"])
    assert "sqs:ChangeMessageVisibility" in worker and "s3:PutObject" in worker and "s3:GetObject" not in worker
    assert "s3:" not in json.dumps(roles["IntakeRole"])


def test_images_expire_and_no_secret_is_in_the_template_or_the_stage(template, stage):
    bucket = template["Resources"]["ImagesBucket"]["Properties"]
    [expire] = [r for r in bucket["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in r]
    assert expire["ExpirationInDays"] == {"Ref": "ImageRetentionDays"} and expire["Prefix"] == "images/"
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["IMAGE_STORE"] == {"Fn::Sub": "s3://${ImagesBucket}/images"}
    assert variables["QUEUE_BACKEND"] == "sqs" and variables["CONFIG_SSM_PATH"] == {"Ref": "ConfigSsmPath"}
    environments = [variables, stage["environment_variables"]] + [
        template["Resources"][f]["Properties"].get("Environment", {}).get("Variables", {}) for f in FUNCTIONS]
    assert not any({"DATABASE_URL", "API_TOKENS", "A1111_AUTH"} & set(e) for e in environments)
    assert "postgresql://" not in json.dumps(template) + json.dumps(stage)


def test_bytecode_is_only_added_for_the_python_that_will_run_it(tmp_path):
    (tmp_path / "sam.yaml").write_text("Resources:\n  F:\n    Properties:\n      Runtime: python3.9\n")
    result = subprocess.run([sys.executable, str(ROOT / "infra" / "add_bytecode.py"), str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "runtime is python3.9" in result.stderr
