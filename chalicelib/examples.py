"""Example values the OpenAPI document shows, shared by the routes' documentation and the response models.

A module of its own so that `openapi` and `response_models` both read it without importing each other.
"""

JOB_ID = "b11f2730-5cde-4f0e-9d4c-8a4c0e1f2a3b"  # the one job id every example shows
