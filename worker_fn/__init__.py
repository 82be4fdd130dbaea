"""`python -m worker_fn`: the worker process outside Lambda (see worker.py)."""
