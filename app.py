"""Chalice app: registers the blueprints and the SQS and schedule handlers. No logic."""
import os
import sys

from chalicelib import dev_token
from chalicelib.api import a1111
from chalicelib.api import batches
from chalicelib.api import catalog
from chalicelib.api import cors
from chalicelib.api import docs
from chalicelib.api import health
from chalicelib.api import http
from chalicelib.api import jobs
from chalicelib.api import legacy
from chalicelib.api import metrics
from chalicelib.api import options
from chalicelib.api import threadsafe
from chalicelib.api import ui
from chalicelib.api import webhooks

dev_token.install_under_chalice_local(os.environ, sys.argv)  # the dev stage only; see there

# configure_logs=False: Chalice's own log lines go through chalicelib.logs (JSON) like ours.
app = threadsafe.Chalice(app_name="a1111-async", configure_logs=False)
app.api.binary_types.append("image/webp")
app.register_middleware(http.contract_errors, "http")
app.register_blueprint(health.blueprint)
app.register_blueprint(docs.blueprint)
app.register_blueprint(jobs.blueprint)
app.register_blueprint(batches.blueprint)
app.register_blueprint(webhooks.blueprint)
app.register_blueprint(metrics.blueprint)
app.register_blueprint(catalog.blueprint)
app.register_blueprint(options.blueprint)
app.register_blueprint(ui.blueprint)
app.register_blueprint(legacy.blueprint, url_prefix=legacy.PREFIX)
app.register_blueprint(a1111.blueprint, url_prefix=a1111.PREFIX)
cors.install(app)  # last: every route above gets its preflight


def _handlers():
    """chalicelib.handlers (the worker's side: runner, placement, intake) on the first event that
    needs it, so the API function's cold start never imports it."""
    from chalicelib import handlers
    return handlers


# Lambda functions beside the API (chalicelib/handlers.py). Each event source is pointed at the
# stack's own queue, with ReportBatchItemFailures, by infra/template.yaml (`make package`); the
# names here are the queues' names when the stack is called a1111-async.


@app.on_sqs_message(queue="a1111-async-jobs", batch_size=1)
def run_jobs(event):
    """One job doorbell: run the most urgent queued job on a free A1111 slot."""
    return _handlers().on_job_doorbells(event)


@app.on_sqs_message(queue="a1111-async-webhooks", batch_size=10)
def deliver_webhooks(event):
    """Webhook doorbells: deliver the due webhooks of the outbox."""
    return _handlers().on_webhook_doorbells(event)


@app.on_sqs_message(queue="a1111-async-submissions", batch_size=10)
def take_submissions(event):
    """Jobs submitted by other systems as SQS messages."""
    return _handlers().on_submissions(event)


@app.schedule("rate(1 minute)")
def sweep(event):
    """Expired leases, work waiting without a doorbell, due webhook retries, A1111 health."""
    return _handlers().on_schedule(event)
