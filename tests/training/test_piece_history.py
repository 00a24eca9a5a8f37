"""A fit's piece history and its tracker: every row's linear pieces at every stage end, the same
record a stage hook would count itself, kept through a resume and a run folder."""

import pytest

from relu_regions import InputError
from relu_regions.training.config import Phase
from relu_regions.training.fitting import count_pieces, fit
from relu_regions.training.result import load_run
from relu_regions.training.stages import load_train_state

RUN = dict(seeds=2, optimum=False)
GROW = dict(depth=5, grow_from=3, phase1=Phase("lm", 5), phase2=Phase("lm", 20), starts=2)
FIXED = dict(depth=4, phase1=Phase("lm", 5), phase2=Phase("lm", 20), starts=2)


class Recorder:
    """The least a tracker needs: record(model, step, **tags)."""

    def __init__(self):
        self.rows = []

    def record(self, model, step, **tags):
        self.rows.append((step, tags["stage"], tags["seed"], tags["row"],
                          count_pieces(model, [(0.0, 1.0)])))


def _table(history):
    h = history["pieces"]
    return list(zip(h["step"].tolist(), h["stage"].tolist(), h["seed"].tolist(),
                    h["row"].tolist(), h["pieces"].tolist(), strict=True))


@pytest.mark.parametrize("kwargs", [FIXED, GROW], ids=["fixed", "grown"])
def test_the_piece_history_counts_every_row_at_every_stage_end(kwargs):
    seen = []

    def hook(event):
        if event.when == "end":
            seen.extend((event.step, event.stage, event.seed_of(r), r,
                         count_pieces(m, [(0.0, 1.0)])) for r, m in enumerate(event.models()))

    tracker = Recorder()
    r = fit("x**3", on_stage=hook, tracker=tracker, **RUN, **kwargs)
    table = _table(r.history)
    assert table == seen == tracker.rows
    # the last stage end holds the kept nets: their counts are the result's pieces
    last = [row for row in table if row[0] == table[-1][0] and row[1] == table[-1][1]]
    assert [row[4] for row in last] == r.pieces.tolist()
    assert table[-1][0] == r.history["loss"].shape[1]  # steps on the loss history's axis
    assert {row[1] for row in table} >= {"phase1", "pick", "phase2:share"}


def test_a_resumed_fit_records_what_an_uninterrupted_one_does(tmp_path, monkeypatch,
                                                               interrupt_after):
    full_tracker = Recorder()
    full = fit("x**3", tracker=full_tracker, **RUN, **GROW)
    state = tmp_path / "state.pt"
    interrupt_after(30)  # inside the polish
    with pytest.raises(KeyboardInterrupt):
        fit("x**3", checkpoint=state, checkpoint_every=5, **RUN, **GROW)
    monkeypatch.undo()
    tracker = Recorder()
    resumed = fit("x**3", resume=load_train_state(state), tracker=tracker, **RUN, **GROW)
    assert tracker.rows == full_tracker.rows
    assert _table(resumed.history) == _table(full.history)


def test_the_run_folder_keeps_the_piece_history(tmp_path):
    r = fit("x**3", **RUN, **FIXED)
    r.save(tmp_path / "run")
    back = load_run(tmp_path / "run")
    assert _table(back.history) == _table(r.history)
    assert (tmp_path / "run" / "history.png").stat().st_size > 0


def test_no_counting_no_piece_history_and_2d_fits_have_none():
    r = fit("x**3", count=False, **RUN, **FIXED)
    assert all(len(v) == 0 for v in r.history["pieces"].values())
    r2 = fit("x*y", depth=2, phase1=Phase("lm", 3), phase2=Phase("lm", 3), seeds=1,
             optimum=False, points=64)
    assert len(r2.history["pieces"]["pieces"]) == 0
    tracker = Recorder()
    fit("x**3", count=False, tracker=tracker, **RUN, **FIXED)
    assert tracker.rows  # the tracker records whatever the fit counts itself


def test_a_tracker_without_record_is_refused():
    with pytest.raises(InputError, match="tracker must have a record"):
        fit("x**3", tracker=[1, 2], **RUN, **FIXED)



def test_a_region_tracker_in_a_fit_counts_what_the_piece_history_does():
    from relu_regions import RegionTracker

    tracker = RegionTracker(segments=[([0.0], [1.0])])
    r = fit("x**3", tracker=tracker, **RUN, **FIXED)
    rows = tracker.rows()
    assert [(row["step"], row["stage"], row["seed"], row["row"], row["linear_pieces"])
            for row in rows] == _table(r.history)
    assert all(row["density"] == row["activation_regions"] for row in rows)  # length 1
