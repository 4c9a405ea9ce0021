"""Settings shared by the whole suite."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The suite's tensors are tiny: intra-op threads cost more than they save (on a shared
    2-core machine each op waits for a descheduled thread), so every test runs single-threaded
    and the setting is restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
