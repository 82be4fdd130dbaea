"""A simulated AUTOMATIC1111 v1.10.1 API for tests; see `server` for behaviour and control API."""
from tests.a1111_sim.server import SimulatedA1111, VERSION

__all__ = ["SimulatedA1111", "VERSION"]
