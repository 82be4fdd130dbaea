"""Chalice app: registers the blueprints (and, later, the SQS and schedule handlers). No logic."""
from chalice import Chalice

from chalicelib.api import docs
from chalicelib.api import health
from chalicelib.api import http
from chalicelib.api import jobs
from chalicelib.api import webhooks

app = Chalice(app_name="a1111-async")
app.api.binary_types.append("image/webp")
app.register_middleware(http.contract_errors, "http")
app.register_blueprint(health.blueprint)
app.register_blueprint(docs.blueprint)
app.register_blueprint(jobs.blueprint)
app.register_blueprint(webhooks.blueprint)
