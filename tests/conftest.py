import os
import signal

import pytest
import torch

# Two CPU cores in CI: more threads only add contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))

# A shell starts a background job (`make test &`, `nohup ...`) with SIGINT ignored, and its children inherit that:
# the tests that press Ctrl-C on a training run or a sweep would then wait for an interrupt that never comes. With
# Python's own handler here, every process the tests start gets the default disposition back at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is faster than two fighting over a shared 2-core machine.

    Modules of tiny-tensor tests opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
