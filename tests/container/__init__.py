"""The container image and compose file, tested without a Docker engine."""
