"""Parsing lerobot-train's log lines into a metrics series."""

from __future__ import annotations

import math

from tatbot_pipeline.training.train_log import MetricsParser, MetricsSeries, parse_log

LINE = ("INFO 2026-11-26 23:43:47 ot_train.py:435 step:{step} smpl:8 ep:1 epch:0.25 loss:{loss} grdn:{grdn} "
        "lr:9.9e-05 updt_s:0.531 data_s:0.057")


def test_parses_metrics_lines_and_ignores_others():
    series = parse_log([
        "INFO 2026-11-26 23:43:46 ot_train.py:332 cfg.steps=20 (20)",
        LINE.format(step=2, loss=1.713, grdn=1.848),
        LINE.format(step=4, loss="nan", grdn="inf"),
    ], log_freq=2)
    assert series.step == [2, 4]
    assert series.loss[0] == 1.713 and math.isnan(series.loss[1])
    assert series.grad_norm[0] == 1.848 and math.isinf(series.grad_norm[1])
    assert series.lr == [9.9e-05, 9.9e-05] and series.update_s[0] == 0.531 and series.data_s[0] == 0.057
    assert series.final_loss is not None and math.isnan(series.final_loss)


def test_rounded_big_steps_are_recovered_from_log_freq():
    # LeRobot prints step 1500 as "2K"; counting by log_freq recovers the exact value.
    parser = MetricsParser(log_freq=500, start_step=1000)
    parser.feed(LINE.format(step="2K", loss=1.0, grdn=1.0))
    parser.feed(LINE.format(step="2K", loss=1.0, grdn=1.0))
    assert parser.series.step == [1500, 2000]


def test_wandb_link_is_found_through_colour_codes():
    series = parse_log(["INFO x Track this run --> \x1b[1m\x1b[33mhttps://wandb.ai/me/tatbot/runs/abc\x1b[0m"])
    assert series.wandb_url == "https://wandb.ai/me/tatbot/runs/abc"


def test_json_round_trip_keeps_nan_and_resume_merge():
    series = parse_log([LINE.format(step=s, loss=l, grdn=1) for s, l in [(1, 2.0), (2, "nan"), (3, 1.0)]])
    back = MetricsSeries.from_json(series.to_json())
    assert back.step == [1, 2, 3] and math.isnan(back.loss[1]) and back.loss[2] == 1.0
    resumed = parse_log([LINE.format(step=s, loss=0.5, grdn=1) for s in (3, 4)])
    back.truncate_after(2)
    back.extend(resumed)
    assert back.step == [1, 2, 3, 4] and back.loss[2:] == [0.5, 0.5]


def test_offline_wandb_has_no_link():
    assert parse_log(["INFO x Track this run --> \x1b[33mNone\x1b[0m"]).wandb_url is None


def test_attempts_keep_a_killed_attempts_steps_up_to_the_checkpoint_the_next_resumed_from():
    from tatbot_pipeline.training.train_log import ATTEMPT_HEADER, parse_attempts

    killed = [LINE.format(step=s, loss=2.0 - s / 10, grdn=1.0) for s in range(1, 8)]  # killed after step 7
    resumed = [LINE.format(step=s, loss=1.0 - s / 100, grdn=1.0) for s in range(5, 11)]  # its checkpoint: step 4
    log = [ATTEMPT_HEADER.format(number=1, start=0), "$ lerobot-train ...", *killed, "Killed",
           ATTEMPT_HEADER.format(number=2, start=4), "$ lerobot-train --resume=true ...", *resumed]
    attempts = parse_attempts(log)
    assert attempts.count == 2 and attempts.first_start == 0 and attempts.steps == 10
    assert attempts.series.step == list(range(1, 11))
    assert attempts.series.loss[:4] == [2.0 - s / 10 for s in range(1, 5)]  # the killed attempt's, up to step 4
    assert attempts.series.loss[4:] == [1.0 - s / 100 for s in range(5, 11)]  # steps 5-7 are the resumed attempt's


def test_a_log_from_before_attempt_headers_is_one_attempt():
    from tatbot_pipeline.training.train_log import parse_attempts

    attempts = parse_attempts(["$ lerobot-train ...", LINE.format(step=1, loss=1.0, grdn=1.0)])
    assert (attempts.count, attempts.series.step) == (1, [1])
    assert parse_attempts([]).count == 0
