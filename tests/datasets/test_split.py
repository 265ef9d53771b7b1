"""Assignment and selection rules, without writing datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tatbot_pipeline.datasets.selection import RecordingEntry, Selection, check_compatible, load_usable_recordings
from tatbot_pipeline.datasets.split import SplitConfig, assign, score
from tatbot_pipeline.recordings.validation_report import Status
from tests.datasets.reports import rec_name, write_report

FEATURES = {"action": {"dtype": "float32", "shape": [14], "names": None}}


def entry(i: int, episodes: int = 20, design: str = "flower", stroke_length: int = 8, fps: int = 10,
          features: dict = FEATURES) -> RecordingEntry:
    return RecordingEntry(name=rec_name(i, design), path=Path("/nonexistent"), fingerprint=f"fp{i}", design=design,
                          scene=design, fps=fps, stroke_length=stroke_length, features=features,
                          episodes=tuple(range(episodes)))


def test_adding_a_recording_keeps_every_existing_episode_on_its_side():
    config = SplitConfig(val_fraction=0.3, salt="s", min_val_episodes=0)
    before = assign([entry(1), entry(2)], config)
    after = assign([entry(1), entry(2), entry(3, design="zorya")], config)
    for side in ("train", "val"):
        for name, eps in before.side(side).items():
            assert after.side(side)[name] == eps
    assert before.count("val") > 0 and before.count("train") > 0
    assert rec_name(3, "zorya") in after.train or rec_name(3, "zorya") in after.val


def test_fraction_is_respected_on_many_episodes_and_salt_changes_the_draw():
    recs = [entry(i, episodes=50) for i in range(10)]
    a = assign(recs, SplitConfig(val_fraction=0.2, salt="a"))
    assert 0.15 < a.count("val") / 500 < 0.25
    b = assign(recs, SplitConfig(val_fraction=0.2, salt="b"))
    assert a.val != b.val


@pytest.mark.parametrize("holdout", ["recording", "design"])
def test_holdout_keeps_whole_units_on_one_side(holdout):
    designs = ["flower", "zorya", "snail", "tatbotlogo"]
    recs = [entry(i, episodes=3, design=designs[i % 4]) for i in range(16)]
    a = assign(recs, SplitConfig(val_fraction=0.3, holdout=holdout, salt="x"))
    for rec in recs:  # a recording is never cut in two
        assert (rec.name in a.train) != (rec.name in a.val)
        assert (a.train.get(rec.name) or a.val.get(rec.name)) == list(range(3))
    if holdout == "design":
        val_designs = {r.design for r in recs if r.name in a.val}
        train_designs = {r.design for r in recs if r.name in a.train}
        assert val_designs and not (val_designs & train_designs)


def test_empty_val_is_topped_up_with_the_closest_unit_and_reported():
    rec = entry(1, episodes=4)
    scores = sorted((score("t", f"{rec.name}/{ep}"), ep) for ep in range(4))
    salt_fraction = scores[0][0] * 0.5  # below every score: hashing alone puts nothing in val
    a = assign([rec], SplitConfig(val_fraction=salt_fraction, salt="t", min_val_episodes=1))
    assert a.val == {rec.name: [scores[0][1]]}
    assert a.topped_up == [f"{rec.name}/{scores[0][1]}"]
    none = assign([rec], SplitConfig(val_fraction=0.0, salt="t"))
    assert none.val == {} and none.count("train") == 4


def test_all_val_is_refused():
    with pytest.raises(ValueError, match="every episode hashed to val"):
        assign([entry(1, design="flower")], SplitConfig(val_fraction=0.99, holdout="design", salt="q"))


def test_mixed_stroke_length_is_refused_unless_grouped():
    sel = Selection([entry(1, episodes=5), entry(2, episodes=5), entry(3, stroke_length=16, episodes=3)])
    with pytest.raises(ValueError, match=r"disagree on stroke_length \(stroke_length=16: stroke-flower.*group_key"):
        check_compatible(sel)
    kept = check_compatible(sel, group_key="stroke_length")
    assert [e.name for e in kept.recordings] == [rec_name(1, "flower"), rec_name(2, "flower")]
    assert "stroke_length=16" in kept.skipped[rec_name(3, "flower")]
    chosen = check_compatible(sel, group_key="stroke_length", group_value="16")
    assert [e.name for e in chosen.recordings] == [rec_name(3, "flower")]


def test_mixed_features_or_fps_are_refused():
    other = {"action": {"dtype": "float32", "shape": [7], "names": None}}
    with pytest.raises(ValueError, match="disagree on features"):
        check_compatible(Selection([entry(1), entry(2, features=other)]))
    with pytest.raises(ValueError, match="disagree on fps"):
        check_compatible(Selection([entry(1), entry(2, fps=30)]), group_key="stroke_length")
    # grouping by signature separates them instead
    kept = check_compatible(Selection([entry(1), entry(2, fps=30, episodes=30)]), group_key="signature")
    assert [e.fps for e in kept.recordings] == [30]


def test_selection_skips_failed_and_incomplete_reports_and_reads_facts_from_the_recording(settings, recording_copy):
    good = recording_copy(rec_name(1))
    failed = recording_copy(rec_name(2))
    write_report(settings, good, excluded={2: "arm reports the sleep pose"})
    write_report(settings, failed, status=Status.FAIL)
    write_report(settings, settings.recordings_dir / rec_name(3), status=Status.INCOMPLETE)
    sel = load_usable_recordings(settings.validation_dir)
    assert [e.name for e in sel.recordings] == [good.name]
    assert sel.skipped == {failed.name: "validation status fail", rec_name(3): "validation status incomplete"}
    e = sel.recordings[0]
    # empty summary: facts come from meta/info.json and scene.yaml
    assert (e.fps, e.stroke_length, e.design, e.scene) == (10, 8, "tatbotlogo", "tatbotlogo")
    assert e.episodes == (0, 1, 3) and e.excluded == {2: ["sleep_pose: arm reports the sleep pose"]}
    assert "observation.images.realsense1" in e.features


def test_no_usable_recording_says_what_to_do(settings, recording_copy):
    write_report(settings, recording_copy(rec_name(1)), status=Status.FAIL)
    with pytest.raises(ValueError, match="no usable recording.*recording_validation"):
        load_usable_recordings(settings.validation_dir)
    with pytest.raises(FileNotFoundError, match="materialize `recording_validation`"):
        load_usable_recordings(settings.home / "nowhere")
