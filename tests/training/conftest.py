import pytest


@pytest.fixture
def interrupt_after(monkeypatch):
    """interrupt_after(n): the next fits raise KeyboardInterrupt right after their n-th optimizer
    step has been journaled (like a kill), until ``monkeypatch.undo()``."""
    from relu_regions.training.stages import Stages

    save = Stages._maybe_save

    def arm(n):
        def interrupted(self, *args):
            save(self, *args)
            if self.total_steps == n:
                raise KeyboardInterrupt

        monkeypatch.setattr(Stages, "_maybe_save", interrupted)
    return arm
