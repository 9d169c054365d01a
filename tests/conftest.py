import os
import signal
import tempfile

import pytest

# Ray 2.60 turns token auth on by default; tests talk to their own local cluster only.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Ray's workers at nice 15 starve beside any busy job; the product's start_ray runs them at ours
# (vip_ray.interrupts.calm_workers). Set here too for clusters tests start themselves and subprocesses.
os.environ.setdefault("RAY_worker_niceness", "0")
# A suite started in the background (`nohup python -m pytest &`) inherits SIGINT ignored, and so would
# every command it starts: the Ctrl-C tests would wait out their timeouts. Handled here, the children
# start with the default action again (exec resets handlers, not ignored signals).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNE_DIR = os.path.join(REPO, "tune")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray cluster for the whole test session (no dashboard), always shut down."""
    import ray

    from vip_ray.interrupts import start_ray

    temp = tempfile.mkdtemp(prefix="vr", dir="/tmp")  # Ray puts Unix sockets here: keep it short
    start_ray(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)  # workers not niced
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def small_pool(ray_session, tmp_path_factory):
    """A real pool, trained once per session with Ray Tune: VP V1–V3 on sklearn digits
    (batch 32, 4 epochs: ≈ 90 % each; fewer steps leave BatchNorm's running statistics unsettled)."""
    from vip_ray.tune.config import compose
    from vip_ray.tune.runner import train_pool

    tmp = tmp_path_factory.mktemp("small_pool")
    cfg = compose(["data=digits", "shape.segments=[1,2,3]", "family.baselines=[]", "pool.name=small",
                   "family.phases=[{name:scratch,epochs:4,lr:3e-3,schedule:cosine}]", "train.batch_size=32",
                   f"pool.root={tmp}/pools",
                   f"tune.storage={tmp}/tune", "tune.verbose=0"])
    return train_pool(cfg, log=lambda s: None)


@pytest.fixture(scope="session")
def small_cp_pool(ray_session, tmp_path_factory):
    """A real class-parallel pool, trained once per session with Ray Tune on sklearn digits: three
    class groups chosen by a probe's confusion on the validation split (VP V1 as a 10-way
    classifier), one VP V1 group model each (|g|+1 outputs); batch 32, 4 epochs each."""
    from vip_ray.tune.config import compose
    from vip_ray.tune.runner import train_pool

    tmp = tmp_path_factory.mktemp("small_cp_pool")
    cfg = compose(["data=digits", "shape=class_parallel", "shape.groups=3", "shape.model=vp_v1",
                   "family.baselines=[]", "pool.name=small-cp",
                   "family.phases=[{name:scratch,epochs:4,lr:3e-3,schedule:cosine}]", "train.batch_size=32",
                   f"pool.root={tmp}/pools", f"tune.storage={tmp}/tune", "tune.verbose=0"])
    return cfg, train_pool(cfg, log=lambda s: None)


#: fixtures that start Ray or train a pool: a test that uses one (directly or through another
#: fixture) is marked ``ray`` automatically, so ``pytest -m "not ray and not slow"`` is the fast lane
RAY_FIXTURES = {"ray_session", "small_pool", "small_cp_pool"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)
