import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamo.metrics import aggregate, latency_stats, match_responses, percentile, score_sample, state_metrics

#            0123456789012345678901234
TRUTH = "SSSSBBBRSSSSSRSSSBBBBRSSSS"
ANSWERS = ["The circle moved to the right.", "Two shapes are on the screen.", "The square turned blue."]


def shifted(codes: str, by: int) -> str:
    """Move every R by ``by`` turns (Standby untouched)."""
    out = [c if c != "R" else "S" for c in codes]
    for index, code in enumerate(codes):
        if code == "R":
            out[index + by] = "R"
    return "".join(out)


def test_perfect_prediction(timeline):
    truth = timeline(TRUTH, ANSWERS)
    score = score_sample(truth, timeline(TRUTH, ANSWERS))
    states = state_metrics(score.confusion)
    assert states["accuracy"] == 1 and states["macro_f1"] == 1
    timing = score.timing.as_dict()
    assert (timing["precision"], timing["recall"], timing["f1"]) == (1, 1, 1)
    assert timing["mean_abs_delay_s"] == 0 and timing["missed"] == timing["early"] == 0
    assert score.timing.answers() == {"matched": 3, "rouge_l": 1.0, "exact": 1.0}


def test_always_silence(timeline):
    truth = timeline(TRUTH, ANSWERS)
    score = score_sample(truth, timeline("S" * len(TRUTH)))
    states = state_metrics(score.confusion)
    silence = TRUTH.count("S")
    assert states["accuracy"] == pytest.approx(silence / len(TRUTH))
    silence_f1 = 2 * silence / (silence + len(TRUTH))
    assert states["per_class"]["standby"]["f1"] == 0 and states["per_class"]["response"]["f1"] == 0
    assert states["macro_f1"] == pytest.approx(silence_f1 / 3)
    timing = score.timing.as_dict()
    assert timing["f1"] == 0 and timing["recall"] == 0 and timing["precision"] is None
    assert timing["missed"] == 3 and timing["predicted"] == 0
    assert score.timing.answers()["rouge_l"] is None


def test_two_seconds_early_is_outside_one_second_tolerance(timeline):
    truth = timeline(TRUTH, ANSWERS)
    early = timeline(shifted(TRUTH, -2), ANSWERS)
    timing = score_sample(truth, early, tolerance=1.0).timing.as_dict()
    assert timing["matched"] == 0 and timing["f1"] == 0
    assert timing["early"] == 3 and timing["missed"] == 3 and timing["late"] == 0
    wide = score_sample(truth, early, tolerance=2.0).timing.as_dict()
    assert wide["f1"] == 1 and wide["mean_delay_s"] == -2 and wide["mean_abs_delay_s"] == 2


def test_one_second_late_is_matched_with_its_delay(timeline):
    truth = timeline(TRUTH, ANSWERS)
    score = score_sample(truth, timeline(shifted(TRUTH, 1), ANSWERS))
    timing = score.timing.as_dict()
    assert timing["f1"] == 1 and timing["mean_delay_s"] == 1 and timing["mean_abs_delay_s"] == 1
    assert [m.delay for m in score.matches] == [1, 1, 1]
    assert state_metrics(score.confusion)["accuracy"] < 1  # the states still disagree turn by turn
    assert score_sample(truth, timeline(shifted(TRUTH, 1), ANSWERS), tolerance=0.5).timing.matched == 0


def test_missed_answer(timeline):
    truth = timeline(TRUTH, ANSWERS)
    predicted = list(TRUTH)
    predicted[13] = "S"
    score = score_sample(truth, timeline("".join(predicted), [ANSWERS[0], ANSWERS[2]]))
    timing = score.timing.as_dict()
    assert timing["missed"] == 1 and timing["precision"] == 1 and timing["recall"] == pytest.approx(2 / 3)
    assert timing["f1"] == pytest.approx(2 * 2 / (2 + 3))
    assert score.missed_truth == [13]


def test_repeated_answer_counts_once_and_the_repeat_is_late(timeline):
    truth = timeline("SSRSSSS")
    score = score_sample(truth, timeline("SSRRSSS"))
    assert score.timing.matched == 1 and score.unmatched_predictions == {3: "late"}
    assert score_sample(timeline("SSSS"), timeline("SRSS")).unmatched_predictions == {1: "spurious"}


def test_answer_text_quality_of_matched_answers(timeline):
    truth = timeline("SRS", ["The circle moved from the left to the right."])
    score = score_sample(truth, timeline("SRS", ["The circle moved to the right."]))
    assert score.matches[0].rouge_l == pytest.approx(2 * 1 * (6 / 9) / (1 + 6 / 9))
    assert not score.matches[0].exact


def test_missing_predictions_count_as_silence_and_are_reported(timeline):
    score = score_sample(timeline("SSRS"), timeline("S..S"))
    assert score.uncovered_turns == 2 and score.timing.missed == 1
    assert score.confusion[0][0] == 3 and score.confusion[2][0] == 1


def test_turn_count_mismatch_and_bad_tolerance_are_errors(timeline):
    with pytest.raises(ValueError, match="turns"):
        score_sample(timeline("SSS"), timeline("SS"))
    with pytest.raises(ValueError, match="tolerance"):
        score_sample(timeline("SS"), timeline("SS"), tolerance=-1)


def test_state_metrics_on_a_known_confusion():
    # truth silence: 6 right, 2 as standby; standby: 1 as silence, 3 right; no response anywhere
    metrics = state_metrics([[6, 2, 0], [1, 3, 0], [0, 0, 0]])
    assert metrics["accuracy"] == pytest.approx(9 / 12)
    assert metrics["per_class"]["silence"]["f1"] == pytest.approx(2 * 6 / (8 + 7))
    assert metrics["per_class"]["standby"]["f1"] == pytest.approx(2 * 3 / (4 + 5))
    assert metrics["per_class"]["response"]["f1"] is None  # never came up: not in the mean
    assert metrics["macro_f1"] == pytest.approx((12 / 15 + 6 / 9) / 2)


def test_aggregate_pools_counts_over_samples(timeline):
    truth = timeline(TRUTH, ANSWERS)
    scores = [score_sample(truth, timeline(TRUTH, ANSWERS)), score_sample(truth, timeline("S" * len(TRUTH)))]
    summary = aggregate(scores)["summary"]
    assert summary["timing_recall"] == 0.5 and summary["timing_precision"] == 1
    assert summary["timing_f1"] == pytest.approx(2 * 3 / (3 + 6))
    assert summary["missed"] == 3 and summary["samples"] == 2 and summary["turns"] == 2 * len(TRUTH)


def test_matching_prefers_more_matches_then_smaller_delay():
    assert match_responses([5, 7], [6, 8], 1.0) == [(0, 0), (1, 1)]
    assert match_responses([5], [4, 5], 1.0) == [(0, 1)]
    assert match_responses([], [1, 2], 1.0) == [] and match_responses([1], [], 1.0) == []


def _brute_force(truth, predicted, tolerance):
    best = (0, 0.0)
    for size in range(min(len(truth), len(predicted)), 0, -1):
        for chosen_truth in itertools.combinations(range(len(truth)), size):
            for chosen_pred in itertools.permutations(range(len(predicted)), size):
                gaps = [abs(truth[i] - predicted[j]) for i, j in zip(chosen_truth, chosen_pred)]
                if all(g <= tolerance + 1e-9 for g in gaps):
                    best = max(best, (size, -sum(gaps)))
        if best[0]:
            return best
    return best


times = st.lists(st.integers(0, 12).map(float), max_size=5, unique=True).map(sorted)


@settings(max_examples=150, deadline=None)
@given(times, times, st.sampled_from([0.0, 1.0, 2.0]))
def test_matching_is_optimal_one_to_one_and_within_tolerance(truth, predicted, tolerance):
    pairs = match_responses(truth, predicted, tolerance)
    assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})
    assert all(abs(truth[i] - predicted[j]) <= tolerance for i, j in pairs)
    total = sum(abs(truth[i] - predicted[j]) for i, j in pairs)
    assert (len(pairs), -total) == pytest.approx(_brute_force(truth, predicted, tolerance))


codes = st.text(alphabet="SBR", min_size=1, max_size=30)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(codes, codes)
def test_counts_add_up_for_any_pair_of_timelines(timeline, truth_codes, predicted_codes):
    build_timeline = timeline
    n = min(len(truth_codes), len(predicted_codes))
    truth, predicted = build_timeline(truth_codes[:n]), build_timeline(predicted_codes[:n])
    score = score_sample(truth, predicted)
    t = score.timing
    assert t.matched + t.missed == t.truth == truth_codes[:n].count("R")
    assert t.matched + t.early + t.late + t.spurious == t.predicted == predicted_codes[:n].count("R")
    assert sum(map(sum, score.confusion)) == n
    metrics = state_metrics(score.confusion)
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1
    assert (metrics["accuracy"] == 1) == (truth_codes[:n] == predicted_codes[:n])
    assert state_metrics(score_sample(truth, truth).confusion)["macro_f1"] == 1


def test_p95_is_the_nearest_rank_every_report_prints():
    """The smallest value that at least 95 % of the values do not exceed, in the eval report and
    in the summaries of stream, client and serve (all through ``latency_stats``)."""
    ten = [float(value) for value in range(1, 11)]
    assert percentile(ten, 0.95) == 10.0  # 9 of 10 is 90 %: only the largest covers 95 %
    assert percentile(list(range(1, 21)), 0.95) == 19 and percentile([7.0], 0.95) == 7.0
    assert latency_stats(reversed(ten)) == (5.5, 10.0, 10.0)


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=300))
def test_p95_covers_at_least_95_percent_and_is_the_smallest_that_does(values):
    p95 = percentile(values, 0.95)
    assert p95 in values and sum(value <= p95 for value in values) >= 0.95 * len(values)
    assert sum(value < p95 for value in values) < 0.95 * len(values)
