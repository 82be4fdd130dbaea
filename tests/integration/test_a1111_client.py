"""The A1111 client against a live simulated A1111: results, error mapping, threads, auth."""
from __future__ import annotations

import base64
import json
import time

import pytest

from chalicelib import a1111
from chalicelib import config
from chalicelib import errors
from tests import support
from tests.a1111_sim import server as a1111_sim

SMALL = {"prompt": "a lighthouse", "width": 64, "height": 48, "steps": 4}
PASSWORD = "s3cret-pw"


shared_sim, sim = support.simulator_fixtures(gen_seconds=0.2, scope="module")


@pytest.fixture(scope="module")
def auth_sim():
    with a1111_sim.SimulatedA1111(gen_seconds=0.05, auth=f"alice:{PASSWORD}") as sim:
        yield sim


@pytest.fixture
def client(sim):
    client = a1111.A1111Client(sim.url, connect_timeout=2, timeout=10)
    yield client
    client.close()


@pytest.fixture
def closed_port_url():
    return f"http://127.0.0.1:{support.free_port()}"






# --- parse_instances ------------------------------------------------------------------------------


def test_parse_instances_reads_one_or_more_urls_and_hides_credentials():
    instances = a1111.parse_instances(" http://a:7860/ ,https://bob:pw@gpu-2.internal:7861/sd/,")

    assert instances == [
        a1111.Instance(url="http://a:7860", name="http://a:7860", capacity=1),
        a1111.Instance(url="https://bob:pw@gpu-2.internal:7861/sd", name="https://gpu-2.internal:7861/sd"),
    ]


@pytest.mark.parametrize("value, complaint", [
    ("", "empty"),
    (" , ", "empty"),
    ("ftp://host:21", "http://host:port"),
    ("127.0.0.1:7860", "http://host:port"),
    ("http://user:hunter2@host:99999", "not a valid URL"),
    ("http://host:7860?x=1", "query"),
    ("http://h:1,http://h:1/", "twice"),
])
def test_parse_instances_refuses_bad_values_without_echoing_passwords(value, complaint):
    with pytest.raises(ValueError, match=complaint) as caught:
        a1111.parse_instances(value)
    assert "hunter2" not in str(caught.value)


# --- generate -------------------------------------------------------------------------------------


def test_generate_returns_a1111s_answer(client, sim):
    result = client.generate("txt2img", {**SMALL, "batch_size": 2, "force_task_id": "job-42"})

    assert len(result["images"]) == 2
    assert base64.b64decode(result["images"][0]).startswith(b"\x89PNG\r\n\x1a\n")
    assert result["parameters"]["force_task_id"] == "job-42"
    assert json.loads(result["info"])["width"] == 64
    assert sim.stats()["force_task_ids"] == ["job-42"]


def test_generate_refuses_unknown_kinds(client):
    with pytest.raises(ValueError):
        client.generate("extras", {})


def test_validation_error_is_rejected_with_a1111s_detail(client, sim):
    with pytest.raises(errors.A1111Rejected) as caught:
        client.generate("txt2img", {"steps": "many"})

    error = caught.value
    assert error.status == 422 and not error.retryable
    assert error.detail == [{"loc": ["body", "steps"], "msg": "value is not a valid integer",
                             "type": "type_error.integer"}]
    assert error.message == (f"A1111 at {sim.url} answered 422 to POST /sdapi/v1/txt2img: "
                             "steps: value is not a valid integer")


def test_img2img_without_init_images_is_rejected(client):
    with pytest.raises(errors.A1111Rejected) as caught:
        client.generate("img2img", SMALL)

    assert caught.value.status == 404 and caught.value.detail == "Init image not found"


def test_undecodable_image_is_rejected_although_a1111_says_500(client):
    with pytest.raises(errors.A1111Rejected) as caught:
        client.generate("img2img", {**SMALL, "init_images": ["bm90IGFuIGltYWdl"]})

    assert caught.value.status == 500 and caught.value.detail == "Invalid encoded image"


def test_server_error_naming_no_exception_is_unavailable_with_its_detail(client, sim):
    sim.set_faults(fail_next=1, fail_body={"detail": "simulated failure"})

    with pytest.raises(errors.A1111Unavailable) as caught:
        client.generate("txt2img", SMALL)

    error = caught.value
    assert error.status == 500 and error.retryable and error.detail == "simulated failure"
    assert error.message == f"A1111 at {sim.url} answered 500 to POST /sdapi/v1/txt2img: simulated failure"


@pytest.mark.parametrize("fail_as, error_class, code, text", [
    ("type_error", errors.A1111Failed, "a1111_failed",
     "TypeError: '>' not supported between instances of 'NoneType' and 'int'"),
    ("zero_division", errors.A1111Failed, "a1111_failed", "ZeroDivisionError: integer division or modulo by zero"),
    ("out_of_memory", errors.A1111OutOfMemory, "a1111_out_of_memory", "OutOfMemoryError: CUDA out of memory."),
    ("bad_gateway", errors.A1111Unavailable, "a1111_unavailable", "answered 502"),
    ("unavailable", errors.A1111Unavailable, "a1111_unavailable", "answered 503"),
    ("gateway_timeout", errors.A1111Unavailable, "a1111_unavailable", "answered 504"),
])
def test_each_real_a1111_failure_has_its_class(client, sim, fail_as, error_class, code, text):
    sim.set_faults(fail_next=1, fail_as=fail_as)

    with pytest.raises(errors.A1111Error) as caught:
        client.generate("txt2img", SMALL)

    assert type(caught.value) is error_class and caught.value.code == code
    assert caught.value.message.startswith(text) or text in caught.value.message
    assert error_class is not errors.A1111Failed or not caught.value.retryable


def test_a_500_naming_an_exception_says_it_first_and_where(client, sim):
    with pytest.raises(errors.A1111Failed) as caught:
        client.generate("txt2img", {**SMALL, "steps": 0})

    assert caught.value.message == (f"ZeroDivisionError: integer division or modulo by zero "
                                    f"(A1111 at {sim.url}, POST /sdapi/v1/txt2img)")


@pytest.mark.parametrize("status", [502, 429])
def test_gateway_errors_and_rate_limits_are_unavailable(client, sim, status):
    sim.set_faults(fail_next=1, fail_status=status, fail_text="<html>try later</html>")

    with pytest.raises(errors.A1111Unavailable) as caught:
        client.generate("txt2img", SMALL)

    assert caught.value.status == status and "<html>try later</html>" in caught.value.message


def test_success_status_with_a_body_that_is_not_json_is_unavailable(client, sim):
    sim.set_faults(fail_next=1, fail_status=200, fail_text="<html>login</html>")

    with pytest.raises(errors.A1111Unavailable, match="not JSON"):
        client.generate("txt2img", SMALL)


def test_connection_refused_is_unavailable(closed_port_url):
    client = a1111.A1111Client(closed_port_url, connect_timeout=2)

    started = time.monotonic()
    with pytest.raises(errors.A1111Unavailable) as caught:
        client.generate("txt2img", SMALL)

    assert time.monotonic() - started < 2
    assert caught.value.message == (f"A1111 at {closed_port_url} refused the connection "
                                    "(POST /sdapi/v1/txt2img)")


def test_no_answer_within_the_timeout_is_unavailable(client, sim):
    sim.set_faults(hang_next=1)

    started = time.monotonic()
    with pytest.raises(errors.A1111Unavailable) as caught:
        client.generate("txt2img", SMALL, timeout=0.3)

    assert 0.3 <= time.monotonic() - started < 2
    assert caught.value.message == f"A1111 at {sim.url} timed out after 0.3 s (POST /sdapi/v1/txt2img)"


def test_dropped_connection_is_unavailable_and_never_retried(client, sim):
    sim.set_faults(drop_next=1)

    with pytest.raises(errors.A1111Unavailable) as caught:
        client.generate("txt2img", SMALL)

    assert "closed the connection without a complete answer" in caught.value.message
    assert sim.stats()["generation_requests"] == 1
    assert client.generate("txt2img", SMALL)["images"]  # the next call gets a fresh connection


# --- progress / interrupt -------------------------------------------------------------------------


def test_progress_and_interrupt_work_from_another_thread_while_generate_blocks(client, sim):
    sim.set_faults(gen_seconds=2.0)
    started = time.monotonic()
    thread, box = support.in_background(lambda: client.generate("txt2img", {**SMALL, "steps": 20}))

    snapshot = support.wait_until(lambda: (lambda p: p if p["progress"] > 0.05 else None)(client.progress()))
    client.interrupt()
    thread.join(5)

    assert snapshot["state"]["job"] == "scripts_txt2img" and snapshot["current_image"]
    assert len(box["value"]["images"]) == 1  # the only job, cut short: its partial image, as A1111 answers
    assert time.monotonic() - started < 1.5
    assert sim.stats()["interrupts"] == 1 and sim.stats()["generations_interrupted"] == 1
    assert client.progress(skip_current_image=True)["state"]["job_count"] == 0


def test_each_thread_reuses_its_own_connection(client, sim):
    for _ in range(5):
        client.progress(skip_current_image=True)
    assert sim.stats()["connections"] == 1

    thread, box = support.in_background(lambda: client.progress())
    thread.join(5)
    client.interrupt()

    assert "value" in box
    assert sim.stats()["connections"] == 2
    assert sim.stats()["progress_calls"] == 6 and sim.stats()["interrupts"] == 1


def test_ping(client, sim, closed_port_url):
    assert client.ping() is True
    assert a1111.A1111Client(closed_port_url).ping() is False

    sim.set_faults(slow_progress=1.0)
    started = time.monotonic()
    assert client.ping(timeout=0.2) is False
    assert time.monotonic() - started < 0.9


def test_progress_failure_is_unavailable(client, sim):
    sim.set_faults(slow_progress=1.0)

    with pytest.raises(errors.A1111Unavailable, match=r"timed out after 0\.2 s \(GET /sdapi/v1/progress\)"):
        client.progress(timeout=0.2)


# --- auth and credentials -------------------------------------------------------------------------


def test_auth_is_sent_on_every_call(auth_sim):
    client = a1111.A1111Client(auth_sim.url, auth=f"alice:{PASSWORD}")

    assert client.generate("txt2img", SMALL)["images"]
    assert client.progress()["state"]["job_count"] == 0
    client.interrupt()
    assert client.ping() is True
    assert auth_sim.requests_seen()[-1]["auth_user"] == "alice"


def test_make_client_takes_the_credentials_and_timeouts_of_the_settings(auth_sim, sim):
    settings = config.Settings(a1111_auth=f"alice:{PASSWORD}", a1111_timeout=0.05)
    client = a1111.make_client(a1111.Instance(url=auth_sim.url, name=auth_sim.url), settings)
    assert client.ping() is True and auth_sim.requests_seen()[-1]["auth_user"] == "alice"

    slow = a1111.Instance(url=sim.url, name=sim.url)  # generates for 0.2 s
    with pytest.raises(errors.A1111Unavailable, match=r"timed out after 0\.05 s"):
        a1111.make_client(slow, settings).generate("txt2img", SMALL)
    assert a1111.make_client(slow, settings, timeout=10).generate("txt2img", SMALL)["images"]


def test_credentials_in_the_url_are_used_and_never_shown(auth_sim):
    url = auth_sim.url.replace("http://", f"http://alice:{PASSWORD}@")
    client = a1111.A1111Client(url)

    assert client.ping() is True
    assert client.name == auth_sim.url
    assert PASSWORD not in repr(client)


@pytest.mark.parametrize("auth, detail", [("", "Not authenticated"),
                                          ("alice:wrong-pw", "Incorrect username or password")])
def test_missing_or_wrong_auth_is_rejected(auth_sim, auth, detail):
    client = a1111.A1111Client(auth_sim.url, auth=auth)

    with pytest.raises(errors.A1111Rejected) as caught:
        client.generate("txt2img", SMALL)

    assert caught.value.status == 401 and caught.value.detail == detail
    assert client.ping() is False


def test_messages_never_contain_credentials(auth_sim, closed_port_url, sim):
    secret_url = closed_port_url.replace("http://", f"http://alice:{PASSWORD}@")
    sim.set_faults(drop_next=1)
    failures = []
    for client, call in [
        (a1111.A1111Client(secret_url), lambda c: c.generate("txt2img", SMALL)),
        (a1111.A1111Client(auth_sim.url.replace("http://", f"http://alice:{PASSWORD}x@")),
         lambda c: c.generate("txt2img", SMALL)),
        (a1111.A1111Client(sim.url, auth=f"alice:{PASSWORD}"), lambda c: c.generate("txt2img", SMALL)),
        (a1111.A1111Client(secret_url), lambda c: c.interrupt()),
    ]:
        with pytest.raises(errors.A1111Error) as caught:
            call(client)
        failures.append(caught.value)

    assert [type(f) for f in failures] == [errors.A1111Unavailable, errors.A1111Rejected,
                                           errors.A1111Unavailable, errors.A1111Unavailable]
    for failure in failures:
        assert PASSWORD not in f"{failure} {failure.detail!r} {failure.__cause__!r}"
        assert "alice" not in str(failure)


def test_parse_instances_reads_capacity_and_labels():
    instances = a1111.parse_instances("http://a:7860;capacity=2;labels=sdxl+fast, http://b:7860;labels=sd15")

    assert instances == [
        a1111.Instance(url="http://a:7860", name="http://a:7860", capacity=2, labels=("sdxl", "fast")),
        a1111.Instance(url="http://b:7860", name="http://b:7860", capacity=1, labels=("sd15",)),
    ]


@pytest.mark.parametrize("value, complaint", [
    ("http://a:7860;capacity=0", "capacity"),
    ("http://a:7860;capacity=two", "capacity"),
    ("http://a:7860;weight=3", "unknown"),
])
def test_parse_instances_refuses_bad_options(value, complaint):
    with pytest.raises(ValueError, match=complaint):
        a1111.parse_instances(value)


def test_load_instances_prefers_the_a1111_instances_file(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"instances": [
        {"url": "http://gpu1:7860/", "capacity": 2, "labels": ["sdxl"]},
        {"url": "https://u:secret@gpu2:7860"},
    ]}))

    instances = a1111.load_instances("http://ignored:7860", instances_file=str(path))

    assert [(i.name, i.capacity, i.labels) for i in instances] == [
        ("http://gpu1:7860", 2, ("sdxl",)), ("https://gpu2:7860", 1, ())]
    assert instances[1].url == "https://u:secret@gpu2:7860"
    assert a1111.load_instances("http://a:7860", instances_file="") == a1111.parse_instances("http://a:7860")
