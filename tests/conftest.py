import os
import tempfile

import pytest

# Ray 2.60 turns token auth on by default; tests talk to their own local cluster only.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNE_DIR = os.path.join(REPO, "tune")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray cluster for the whole test session (no dashboard), always shut down."""
    import ray

    temp = tempfile.mkdtemp(prefix="vr", dir="/tmp")  # Ray puts Unix sockets here: keep it short
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
