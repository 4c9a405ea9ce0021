"""Settings shared by the whole suite."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The suite's tensors are tiny: intra-op threads cost more than they save (on a shared
    2-core machine each op waits for a descheduled thread), so the whole session runs
    single-threaded, module-scoped fixtures included (a function-scoped setting came after them:
    tests/models/test_classifier.py's training fixture took 30-100 s instead of 3), and the
    setting is restored at the end."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class HostSyncs:
    """Counts the calls that read a tensor's value on the host (`Tensor.__bool__`, `.item`,
    `.tolist`, `__float__`, `__int__`): on an accelerator each one waits for the device.

    Counting is off until `on()`; with `library_only`, a call counts only if a frame of the
    library (sde_lib/, models/, solvers/) is on the stack, i.e. the library made it.

    Attributes:
        calls: the names of the counted calls, in order.
    """

    METHODS = ("__bool__", "item", "tolist", "__float__", "__int__")

    def __init__(self):
        from pathlib import Path

        import score_sde.models
        import score_sde.sde_lib
        import score_sde.solvers

        self.library = tuple(str(Path(m.__file__).parent) for m in
                             (score_sde.sde_lib, score_sde.models, score_sde.solvers))
        self.calls: list[str] = []
        self.counting = self.library_only = False

    def on(self, library_only: bool = False) -> None:
        self.counting, self.library_only = True, library_only

    def off(self) -> None:
        self.counting = False

    def seen(self, name: str) -> None:
        if not self.counting:
            return
        if self.library_only:
            import sys

            frame = sys._getframe(2)
            while frame is not None and not frame.f_code.co_filename.startswith(self.library):
                frame = frame.f_back
            if frame is None:
                return
        self.calls.append(name)


@pytest.fixture
def host_syncs(monkeypatch):
    """A `HostSyncs` counter with the tensor methods patched for the test's duration."""
    counter = HostSyncs()
    for name in HostSyncs.METHODS:
        original = getattr(torch.Tensor, name)

        def patched(self, *args, _original=original, _name=name, **kwargs):
            counter.seen(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, patched)
    return counter
