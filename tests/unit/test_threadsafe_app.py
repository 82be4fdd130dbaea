"""Each thread's handler sees its own request (chalicelib/api/threadsafe.py): under waitress several
threads run routes at once, and with Chalice's shared `current_request` one read another's body."""
from __future__ import annotations

import concurrent.futures
import json
import threading

import chalice
from chalice import config as chalice_config
from chalice import local

from chalicelib.api import threadsafe


def racing_app(app_class) -> tuple[chalice.Chalice, local.LocalGateway]:
    """An app whose route waits until two requests are inside it, then answers with its request's header."""
    app = app_class(app_name="race")
    both_inside = threading.Barrier(2, timeout=5)
    blueprint = chalice.Blueprint(__name__)

    @blueprint.route("/who")
    def who():
        both_inside.wait()
        return {"caller": blueprint.current_request.headers["x-caller"]}

    app.register_blueprint(blueprint)
    return app, local.LocalGateway(app, chalice_config.Config.create(chalice_app=app, app_name="race"))


def call_twice_at_once(gateway: local.LocalGateway) -> list[str]:
    def call(caller: str) -> str:
        response = gateway.handle_request(method="GET", path="/who", headers={"x-caller": caller}, body=None)
        return json.loads(response["body"])["caller"]

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return list(pool.map(call, ["first", "second"]))


def test_two_requests_at_once_each_see_their_own_request():
    _, gateway = racing_app(threadsafe.Chalice)
    assert call_twice_at_once(gateway) == ["first", "second"]


def test_plain_chalice_mixes_them_up_which_is_why_the_app_is_threadsafe():
    _, gateway = racing_app(chalice.Chalice)
    assert call_twice_at_once(gateway) in (["second", "second"], ["first", "first"])


def test_the_service_app_is_the_threadsafe_one():
    import app

    assert isinstance(app.app, threadsafe.Chalice)
