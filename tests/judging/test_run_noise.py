"""Run-to-run noise: a baseline's centre over its runs, the spread moderated across a file's
tests, the prediction bound, and a history that restarts at an intended change.

The statistical claims are checked on simulated run medians whose distribution is known
(log-normal runs, seeded), so coverage and power are ground truth, not a re-derivation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_efficientllm.core.limits import parse_limit
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.judging import run_noise
from pytest_efficientllm.judging.compare import compare_record
from pytest_efficientllm.judging.gate import GateOptions, judge
from pytest_efficientllm.judging.run_noise import (
    PREDICTION,
    RunPrior,
    moderate,
    pool,
    predict,
)
from pytest_efficientllm.storage.baselines import BaselineStore

ROUNDS = (1.0, 1.01, 0.99, 1.0, 1.005, 0.995, 1.0)  # each run's rounds agree to ~1%
TOL5 = (parse_limit("cpu_time_per_round", "+5%"),)


def _metric(median: float, history: tuple[float, ...] = ()) -> Metric:
    samples = tuple(median * r for r in ROUNDS)
    return Metric("cpu_time_per_round", median, "s", "lower", "measured", "test", samples=samples, history=history)


def _record(nodeid: str, metric: Metric) -> Record:
    return Record(nodeid, "cpu", metrics={metric.name: metric})


def _verdict(base: Metric, current_median: float, priors: dict[str, RunPrior] | None = None):
    (v,) = [
        v
        for v in compare_record(
            _record("t.py::t", base), _record("t.py::t", _metric(current_median)), TOL5, run_priors=priors
        )
        if v.metric == "cpu_time_per_round"
    ]
    return v


def _pairs(rng: np.random.Generator, sigmas: np.ndarray, runs: int) -> list[tuple[float, int]]:
    logs = rng.normal(0.0, sigmas[:, None], size=(sigmas.size, runs))
    return [(float(v), runs - 1) for v in np.var(logs, axis=1, ddof=1)]


# -- the prior ------------------------------------------------------------------------------------


def test_tests_with_one_common_spread_give_that_spread_with_many_degrees_of_freedom() -> None:
    rng = np.random.default_rng(1)
    prior = moderate(_pairs(rng, np.full(300, 0.03), runs=5))
    assert prior is not None
    assert math.sqrt(prior.variance) == pytest.approx(0.03, rel=0.08)
    assert prior.df > 40  # infinite when the variances agree beyond sampling noise


def test_tests_whose_spreads_differ_give_a_prior_with_few_degrees_of_freedom() -> None:
    # Spreads drawn from a scaled inverse chi-square with 6 degrees of freedom around 0.05.
    rng = np.random.default_rng(2)
    variances = 6 * 0.05**2 / rng.chisquare(6, size=400)
    prior = moderate(_pairs(rng, np.sqrt(variances), runs=5))
    assert prior is not None
    assert 3 < prior.df < 15
    assert math.sqrt(prior.variance) == pytest.approx(0.05, rel=0.15)


def test_too_few_tests_or_zero_spreads_give_no_prior() -> None:
    assert moderate([(0.001, 4), (0.002, 4)]) is None
    assert moderate([(0.0, 4), (0.0, 4), (0.001, 4), (0.002, 4)]) is None


def test_pool_groups_measured_metrics_by_name_and_needs_two_runs_per_test() -> None:
    records = [_record(f"t.py::t{i}", _metric(0.01, history=(0.0101 + i * 1e-4, 0.0098))) for i in range(4)]
    counted = [
        Record(
            f"t.py::c{i}",
            "cpu",
            metrics={
                "peak_memory": Metric(
                    "peak_memory", 100.0 + i, "B", "lower", "counted", "exact", samples=(1.0, 2.0), history=(3.0,)
                )
            },
        )
        for i in range(4)
    ]
    one_run = [_record(f"t.py::o{i}", _metric(0.01)) for i in range(4)]
    priors = pool(records + counted + one_run)
    assert set(priors) == {"cpu_time_per_round"}
    assert priors["cpu_time_per_round"].tests == 4
    assert pool(one_run) == {}


# -- the prediction bound -------------------------------------------------------------------------


def test_without_a_prior_three_runs_are_needed_and_with_one_a_single_run_has_a_bound() -> None:
    assert predict([0.01, 0.011]) is None
    assert predict([0.01, 0.011, 0.0105]) is not None
    prior = RunPrior(variance=0.02**2, df=math.inf, tests=10)
    one = predict([0.01], prior)
    assert one is not None and one.pooled
    # The prior's spread around one run: z(99.9%) x 2% x sqrt(1 + 1).
    assert one.high == pytest.approx(0.01 * math.exp(3.0902 * 0.02 * math.sqrt(2)), rel=1e-4)
    assert one.low == pytest.approx(0.01 * math.exp(-3.0902 * 0.02 * math.sqrt(2)), rel=1e-4)


def _simulate(
    sigma: float,
    runs: int,
    shift: float,
    moderated: bool,
    files: int = 300,
    tests: int = 10,
    seed: int = 3,
    level: float = PREDICTION,
) -> float:
    """Share of one-more-run medians beyond the upper bound, over simulated baseline files."""
    rng = np.random.default_rng(seed)
    beyond = trials = 0
    for _ in range(files):
        medians = np.exp(rng.normal(0.0, sigma, size=(tests, runs)))
        records = [
            _record(f"t.py::t{i}", _metric(float(m[-1]), history=tuple(float(x) for x in m[:-1])))
            for i, m in enumerate(medians)
        ]
        priors = pool(records) if moderated else {}
        for _i, m in enumerate(medians):
            prediction = predict(list(m), priors.get("cpu_time_per_round"), level=level)
            new_run = math.exp(rng.normal(0.0, sigma)) * (1 + shift)
            beyond += new_run > prediction.high  # type: ignore[union-attr]
            trials += 1
    return beyond / trials


def test_unchanged_runs_fall_beyond_the_bound_about_as_rarely_as_the_prediction_level_says() -> None:
    rate = _simulate(0.03, runs=5, shift=0.0, moderated=True)
    assert rate <= 3 * (1 - PREDICTION)  # 3000 trials: 0.1% expected, 0.3% would be a miscalibration


def test_each_of_m_voting_processes_draws_its_bound_so_that_all_m_together_keep_the_level() -> None:
    assert run_noise.gate_level(1) == PREDICTION
    assert run_noise.gate_level(3) == pytest.approx(0.9)
    for m in (2, 3, 5):
        assert (1 - run_noise.gate_level(m)) ** m == pytest.approx(1 - PREDICTION)
    # On simulated unchanged runs, one process at the level for 3 lands beyond its bound ~10% of
    # the time: three independent ones all beyond, ~0.1%.
    rate = _simulate(0.03, runs=5, shift=0.0, moderated=True, level=run_noise.gate_level(3))
    assert 0.07 < rate < 0.13
    with pytest.raises(ValueError, match="processes must be 1 or more"):
        run_noise.gate_level(0)


def test_the_bound_is_drawn_for_the_processes_that_vote_and_the_cpu_default_warns_below_its_gross_floor() -> None:
    # One baseline run, the file's runs spread 2%: the 99.9% bound lies ~+9.1% out, the
    # 90% one (each of 3 voting processes) ~+3.7%. A +7% run beyond the 5% tolerance:
    base, now = _record("t.py::t", _metric(0.0100)), _record("t.py::t", _metric(0.0107))
    priors = {"cpu_time_per_round": RunPrior(variance=0.02**2, df=math.inf, tests=10)}

    def status(limits, processes):
        (v,) = [
            v
            for v in compare_record(base, now, limits, run_priors=priors, processes=processes)
            if v.metric == "cpu_time_per_round"
        ]
        return v.status, v.message

    alone, message = status(TOL5, 1)
    assert alone == "pass" and "99.9% prediction bound" in message
    voted, message = status(TOL5, 3)
    assert voted == "fail" and "90.0% prediction bound" in message
    # The CPU's default check (no tolerance given) is drawn for the vote too, but +7% is below
    # its gross floor (+25% at the least), so it warns instead of failing.
    default, message = status((), 3)
    assert default == "warn" and "90.0% prediction bound" in message and "below the gross floor" in message


def test_the_gate_draws_the_vote_s_bound_only_where_a_vote_follows() -> None:
    # The same +7% as above, judged by the gate for 3 voting processes: a suspect under the
    # default gate; with --efficiency-gate=warn or --update-baselines no fresh process votes, so
    # the one process is held to the 99.9% bound and passes.
    base, now = _record("t.py::t", _metric(0.0100)), _record("t.py::t", _metric(0.0107))
    priors = {"cpu_time_per_round": RunPrior(variance=0.02**2, df=math.inf, tests=10)}
    for options, expected, level in (
        (GateOptions(), "fail", "90.0%"),
        (GateOptions(mode="warn"), "pass", "99.9%"),
        (GateOptions(update=True), "pass", "99.9%"),
    ):
        (v,) = [v for v in judge(now, TOL5, base, "", options, priors, processes=3) if v.metric == "cpu_time_per_round"]
        assert (v.status, f"{level} prediction bound" in v.message) == (expected, True), (options, v.message)


def test_moderation_lets_five_runs_catch_a_ten_percent_regression_that_their_own_spread_hides() -> None:
    # Runs jitter 1%: from its own five runs (4 degrees of freedom, t = 7.2) a test's 99.9%
    # bound lies ~9% out, where a +10% run lands a quarter of the time; pooled over its
    # file's 10 tests, ~4-5% out.
    pooled = _simulate(0.01, runs=5, shift=0.10, moderated=True)
    alone = _simulate(0.01, runs=5, shift=0.10, moderated=False)
    assert pooled >= 0.95
    assert alone < 0.8


# -- the comparison reads the centre of the runs --------------------------------------------------


def test_the_faster_half_table_matches_simulated_normal_jitter() -> None:
    rng = np.random.default_rng(7)
    for k in range(2, 11):
        runs = np.sort(rng.normal(size=(200_000, k)), axis=1)[:, : k // 2 + 1]
        factor, df, centre_mean, centre_sd = run_noise.FASTER_HALF[k]
        variances = np.var(runs, axis=1, ddof=1) * factor
        assert np.mean(variances) == pytest.approx(1.0, abs=0.01)
        assert 2 / np.var(variances) == pytest.approx(df, rel=0.05)
        medians = np.median(runs, axis=1)
        assert np.mean(medians) == pytest.approx(centre_mean, abs=0.01)
        assert np.std(medians) == pytest.approx(centre_sd, abs=0.01)


def test_slow_spells_in_most_runs_do_not_hide_a_regression() -> None:
    # Five baseline runs of one matmul test seen here: two at the machine's speed, three in a
    # slow spell (+20%). The median of all five sits in the spell and read +20% as -0.2%.
    base = _metric(0.02015, history=(0.02002, 0.02417, 0.0243, 0.02472))
    prior = {"cpu_time_per_round": RunPrior(variance=0.005**2, df=30.0, tests=16)}
    assert _verdict(base, 0.02010, prior).status == "pass"
    slower = _verdict(base, 0.0242, prior)
    assert slower.status == "fail" and slower.change == pytest.approx(0.20, abs=0.01)


def test_for_a_rate_the_faster_half_is_the_higher_one() -> None:
    runs = [1000.0, 1010.0, 800.0, 990.0, 1005.0]  # tokens/s; one slow spell at 800
    assert run_noise.centre(runs, "higher") == pytest.approx(1005.0)
    prediction = predict(runs, RunPrior(variance=0.01**2, df=30.0, tests=8), direction="higher")
    assert prediction is not None and prediction.low < 1005.0 < prediction.high
    assert prediction.bound("higher") == prediction.low


def test_one_baseline_run_that_ran_off_does_not_move_the_comparison() -> None:
    # Four runs at 10 ms, the newest (the one whose rounds are stored) 30% slow; the file's
    # other tests spread 1% between runs. The off run still widens this test's own spread
    # (moderated: ~4.8%, bound ~+19%), but the change is read against the runs' centre.
    base = _metric(0.013, history=(0.0100, 0.0101, 0.0099, 0.0100))
    prior = {"cpu_time_per_round": RunPrior(variance=0.01**2, df=20.0, tests=8)}
    same = _verdict(base, 0.0101, prior)
    assert same.status == "pass" and same.change == pytest.approx(0.01, abs=0.005)
    assert "centre of 5 runs" in same.message
    slower = _verdict(base, 0.0125, prior)
    assert slower.status == "fail" and slower.change == pytest.approx(0.25, abs=0.01)


def test_a_baseline_of_two_runs_gets_a_bound_from_its_files_prior() -> None:
    base = _metric(0.0100, history=(0.0102,))
    prior = {"cpu_time_per_round": RunPrior(variance=0.02**2, df=20.0, tests=8)}
    assert "run-to-run noise unknown" in _verdict(base, 0.0115).message
    within = _verdict(base, 0.0109, prior)  # +8%: beyond tolerance, inside ~2.5 x 2% x 1.2
    assert within.status == "pass" and "spread pooled with the file's tests" in within.message
    assert _verdict(base, 0.0125, prior).status == "fail"


# -- the history restarts at an intended change ---------------------------------------------------


def _store_runs(store: BaselineStore, nodeid: str, medians: list[float]):
    updates = []
    for median in medians:
        updates += store.update([_record(nodeid, _metric(median))])
    return updates


def _store_neighbours(store: BaselineStore, runs: int = 5) -> None:
    """Five other tests of the same file, each recorded `runs` times with ~1% jitter."""
    rng = np.random.default_rng(5)
    for i in range(5):
        _store_runs(store, f"suites/t.py::other{i}", list(0.01 * np.exp(rng.normal(0, 0.01, runs))))


def test_re_recording_unchanged_code_keeps_the_runs_and_a_speed_up_restarts_them(tmp_path) -> None:
    store = BaselineStore(tmp_path, "cpu")
    _store_neighbours(store)
    updates = _store_runs(store, "suites/t.py::t", [0.0100, 0.0102, 0.0099, 0.0101, 0.0100])
    assert not any(u.history_notes for u in updates)
    assert store.lookup("suites/t.py::t")["cpu_time_per_round"].history == (0.01, 0.0102, 0.0099, 0.0101)
    # A deliberate 20% speed-up, recorded once: noise does not make a run faster, so the old
    # runs no longer describe this code.
    (faster,) = store.update([_record("suites/t.py::t", _metric(0.0080))])
    assert len(faster.history_notes) == 1 and "-20.0%" in faster.history_notes[0]
    assert "restarts" in faster.history_notes[0]
    stored = store.lookup("suites/t.py::t")["cpu_time_per_round"]
    assert stored.history == () and run_noise.run_medians(stored) == [pytest.approx(0.008)]
    # ... and a run back at the old speed is now a regression, not the old centre.
    v = _verdict(stored, 0.0100)
    assert v.status == "fail" and v.change == pytest.approx(0.25, abs=0.01)


def test_a_slow_run_re_recorded_joins_the_history_and_the_faster_runs_outvote_it(tmp_path) -> None:
    store = BaselineStore(tmp_path, "cpu")
    _store_neighbours(store)
    _store_runs(store, "suites/t.py::t", [0.0100, 0.0102, 0.0099, 0.0101])
    (slow,) = store.update([_record("suites/t.py::t", _metric(0.0125))])  # a slow spell: +25%
    assert len(slow.history_notes) == 1 and "kept with the earlier runs" in slow.history_notes[0]
    stored = store.lookup("suites/t.py::t")["cpu_time_per_round"]
    assert run_noise.run_medians(stored) == pytest.approx([0.0100, 0.0102, 0.0099, 0.0101, 0.0125])
    priors = store.run_priors("suites/t.py::t")
    assert _verdict(stored, 0.0100, priors).status == "pass"
    assert _verdict(stored, 0.0120, priors).status == "fail"


def test_the_store_pools_a_files_tests_and_learns_again_after_an_update(tmp_path) -> None:
    store = BaselineStore(tmp_path, "cpu")
    for i in range(4):
        _store_runs(store, f"suites/t.py::t{i}", [0.0100, 0.0102 + i * 1e-4])
    assert store.run_priors("suites/t.py::t0")["cpu_time_per_round"].tests == 4
    assert store.run_priors("suites/other.py::t") == {}  # another file shares nothing
    _store_runs(store, "suites/t.py::t4", [0.0100, 0.0103])
    assert store.run_priors("suites/t.py::t0")["cpu_time_per_round"].tests == 5


def test_a_file_too_small_to_pool_takes_the_spread_its_profiles_files_share(tmp_path) -> None:
    # A project of one test per file had no shared spread: three runs alone put a test's 99.9%
    # bound at +300% and more, so its CPU default check passed a 3x slowdown.
    store = BaselineStore(tmp_path, "cpu")
    _store_neighbours(store)  # suites/t.py: five tests, ~1% jitter
    _store_runs(store, "suites/alone.py::t", [0.0100, 0.0109, 0.0100])
    shared = store.run_priors("suites/alone.py::t")["cpu_time_per_round"]
    assert shared.scope == "the tests of every baseline file of the profile"
    assert shared.variance == store.run_priors("suites/t.py::other0")["cpu_time_per_round"].variance
    alone = store.lookup("suites/alone.py::t")["cpu_time_per_round"]
    assert run_noise.predict(run_noise.run_medians(alone)).high > 0.03  # its own runs alone: +200% and more
    assert run_noise.predict(run_noise.run_medians(alone), shared).high < 0.02
    # A file that pools its own keeps it: its tests say more about themselves than the folder.
    for i in range(3):
        _store_runs(store, f"suites/noisy.py::t{i}", [0.0100, 0.0130 + i * 1e-3, 0.0090])
    own = store.run_priors("suites/noisy.py::t0")["cpu_time_per_round"]
    assert own.tests == 3 and own.scope == "the file's tests"
    # ... and the folder's, learnt again once another file changed, reaches the lone file too (its own
    # three runs have no spread in their faster half, so they add nothing).
    assert store.run_priors("suites/alone.py::t")["cpu_time_per_round"].tests == 5 + 3


def test_runs_under_other_software_restart_the_history_and_another_cpu_model_does_not(tmp_path) -> None:
    store = BaselineStore(tmp_path, "cpu")
    _store_neighbours(store)
    old = {"packages": {"torch": "2.13.0", "numpy": "2.4.6"}, "python": "3.11.7", "torch_threads": 1, "cpu_model": "A"}

    def run(median: float, **changes):
        metric = _metric(median)
        record = Record("suites/t.py::t", "cpu", metrics={metric.name: metric}, fingerprint={**old, **changes})
        (update,) = store.update([record])
        return update

    for median in (0.0100, 0.0102, 0.0099, 0.0101):
        assert run(median).restarted == {}
    # Another CPU of the runner kind: its run joins the others (+1%, inside their bound).
    other_cpu = run(0.0101, cpu_model="B")
    assert other_cpu.restarted == {} and other_cpu.history_notes == []
    assert len(store.lookup("suites/t.py::t")["cpu_time_per_round"].history) == 4
    # A torch upgrade that costs 3%: inside the old runs' bound, so it used to join them, and
    # their faster half kept the old speed as the centre for nine more runs.
    upgraded = {"packages": {"torch": "2.14.0", "numpy": "2.4.6"}, "cpu_model": "B"}
    assert run(0.0104, **upgraded).restarted == {"torch 2.13.0 -> 2.14.0": ["suites/t.py::t"]}
    assert store.lookup("suites/t.py::t")["cpu_time_per_round"].history == ()
    assert run(0.0105, **upgraded).restarted == {}  # the next run under it carries the first
    assert store.lookup("suites/t.py::t")["cpu_time_per_round"].history == (0.0104,)
    # Another interpreter, or another thread count, is another program too.
    assert list(run(0.0104, **upgraded, python="3.12.1").restarted) == ["python 3.11.7 -> 3.12.1"]
    assert list(run(0.0104, **upgraded, python="3.12.1", torch_threads=2).restarted) == ["torch_threads 1 -> 2"]


def test_an_update_counts_the_timed_runs_each_test_now_holds(tmp_path) -> None:
    store = BaselineStore(tmp_path, "cpu")
    assert [u.runs for u in _store_runs(store, "suites/t.py::t", [0.0100, 0.0101, 0.0100])] == [
        {"suites/t.py::t": 1},
        {"suites/t.py::t": 2},
        {"suites/t.py::t": 3},
    ]
    (counted_only,) = store.update([Record("suites/t.py::c", "cpu", metrics={})])
    assert counted_only.runs == {}  # times nothing: no runs to count


def test_a_prior_too_uncertain_for_a_bound_says_unknown_instead_of_overflowing() -> None:
    # Found by the GPU check's CPU rehearsal: a one-run baseline under a prior whose tests'
    # variances disagree (d0 = 0.47) put Student's t past 10^6 and math.exp overflowed inside
    # --update-baselines.
    vague = RunPrior(variance=1.54e-05, df=0.47, tests=5)
    assert predict([0.00138784], vague) is None
    assert predict([0.00138784], vague, direction="higher") is None
    # One degree of freedom and a wide spread: far out, but a number, both ways.
    wide = RunPrior(variance=9.0, df=1.0, tests=5)
    assert predict([0.01], wide).high == math.inf and predict([0.01], wide).low >= 0
    up = predict([100.0], wide, direction="higher")
    assert up is not None and up.low == 0.0 and up.high == math.inf
