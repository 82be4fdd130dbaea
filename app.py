"""Chalice app: registers the blueprints and the SQS and schedule handlers. No logic."""
import os
import sys

from chalice import Chalice

from chalicelib import dev_token
from chalicelib import handlers
from chalicelib.api import batches
from chalicelib.api import catalog
from chalicelib.api import docs
from chalicelib.api import health
from chalicelib.api import http
from chalicelib.api import jobs
from chalicelib.api import metrics
from chalicelib.api import webhooks

dev_token.install_under_chalice_local(os.environ, sys.argv)  # the dev stage only; see there

# configure_logs=False: Chalice's own log lines go through chalicelib.logs (JSON) like ours.
app = Chalice(app_name="a1111-async", configure_logs=False)
app.api.binary_types.append("image/webp")
app.register_middleware(http.contract_errors, "http")
app.register_blueprint(health.blueprint)
app.register_blueprint(docs.blueprint)
app.register_blueprint(jobs.blueprint)
app.register_blueprint(batches.blueprint)
app.register_blueprint(webhooks.blueprint)
app.register_blueprint(metrics.blueprint)
app.register_blueprint(catalog.blueprint)

# Lambda functions beside the API (chalicelib/handlers.py). Each event source is pointed at the
# stack's own queue, with ReportBatchItemFailures, by infra/template.yaml (`make package`); the
# names here are the queues' names when the stack is called a1111-async.


@app.on_sqs_message(queue="a1111-async-jobs", batch_size=1)
def run_jobs(event):
    """One job doorbell: run the most urgent queued job on a free A1111 slot."""
    return handlers.on_job_doorbells(event)


@app.on_sqs_message(queue="a1111-async-webhooks", batch_size=10)
def deliver_webhooks(event):
    """Webhook doorbells: deliver the due webhooks of the outbox."""
    return handlers.on_webhook_doorbells(event)


@app.on_sqs_message(queue="a1111-async-submissions", batch_size=10)
def take_submissions(event):
    """Jobs submitted by other systems as SQS messages."""
    return handlers.on_submissions(event)


@app.schedule("rate(1 minute)")
def sweep(event):
    """Expired leases, work waiting without a doorbell, due webhook retries, A1111 health."""
    return handlers.on_schedule(event)
