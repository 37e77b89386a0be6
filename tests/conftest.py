import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ./run.sh test runs one pytest-xdist worker per core: each worker, and every process it
# starts, computes on one thread (two workers of a thread per core each would spin-wait
# against each other, tens of times slower). Set before torch is imported.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: trains, exports or starts processes (5 s or more here); `./run.sh test -m 'not slow'` for a fast loop",
    )


_SIGCHLD_AT_START = signal.getsignal(signal.SIGCHLD)


@pytest.fixture(autouse=True)
def sigchld_as_in_a_fresh_process():
    """Each test ends with SIGCHLD handled as when the session started.

    The first DataLoader with worker processes installs a process-wide SIGCHLD
    handler (torch's worker-failure check) that stays for the life of the process.
    A command run from the shell starts its subprocesses before its loaders;
    the suite runs hundreds of commands in one process, and with that handler
    left over from an earlier test, a later test's subprocess read (detectron2's
    collect_env in train_net's setup) crashed the whole run with a segmentation
    fault. Tests must not hand process-wide state to each other."""
    yield
    signal.signal(signal.SIGCHLD, _SIGCHLD_AT_START)


@pytest.fixture
def clean_worker_start():
    """DataLoader workers started by a fresh forkserver process instead of forked from
    the test process. By the time a worker test runs, the suite's long-lived process
    holds ONNX Runtime, OpenVINO and torch threads, and forking it crashed it now and
    then (a segmentation fault of the parent in test_resume_at_n_to_2n_equals_2n_straight[2],
    in three runs of the suite in twelve); a command forks its workers from a young
    process, which the forkserver stands in for."""
    import multiprocessing

    previous = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("forkserver", force=True)
    yield
    multiprocessing.set_start_method(previous, force=True)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of tiny tensors: faster there, and it avoids OpenMP
    stalls (tens of times slower forwards) when the CPU cores are shared with other jobs."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """Eight generated shapes images (64-96 px), registered as a user COCO json.

    Returns (dataset name, json file).
    """
    import centerx
    from centerx.data.datasets import generate_shapes

    root = str(tmp_path_factory.mktemp("shapes"))
    json_file = generate_shapes(root, "tiny", num_images=8, seed=7, min_size=64, max_size=96)
    name = "test_tiny_shapes"
    centerx.register_coco_json_datasets([(name, json_file, os.path.join(root, "tiny"))])
    return name, json_file
