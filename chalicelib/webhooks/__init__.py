"""Webhooks, one module per job:

- `url_safety`: which URLs may be called (SSRF) and where an attempt connects.
- `signing`: Standard Webhooks headers and the checks on a job's secret.
- `events`: the body of a delivery, built from the job snapshot its event recorded.
- `attempt`: one HTTP POST, bounded by a total deadline.
- `dispatch`: the dispatcher use case (claim, attempt, record, retry schedule).
- `doorbell`: waking dispatchers.
- `history`: a job's deliveries as its owner sees them; `redelivery`: the redeliver rate limit.

The API imports this package too, so the HTTP and signing libraries are imported at the first
delivery, never with a module (the API's cold start needs neither).
"""
