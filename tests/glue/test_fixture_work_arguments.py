"""The work a test declares per round: a count that cannot describe a round is a usage error."""

from __future__ import annotations

import pytest

from pytest_efficientllm.measuring.meter import Work

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")


@pytest.mark.parametrize(
    ("argument", "value"),
    [("tokens", 0), ("samples", 0), ("params", 0), ("tokens", -3), ("flops", -1), ("tokens", 2.5), ("samples", True)],
)
def test_a_count_that_cannot_describe_a_round_is_refused_naming_it(argument: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^{argument}={value!r}: must be an int of [01] or more"):
        Work(**{argument: value})  # type: ignore[arg-type]


def test_zero_flops_is_a_true_count_and_accepted() -> None:
    assert Work(flops=0, tokens=1, samples=1, params=1).flops == 0


def test_the_fixture_reports_a_bad_count_as_misuse_naming_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.efficiency(rounds=2, warmup=0)
        def test_no_tokens(efficiency):
            efficiency.measure(lambda: None, tokens=0)

        @pytest.mark.efficiency(rounds=2, warmup=0)
        def test_no_new_tokens(efficiency):
            efficiency.generate(object(), None, max_new_tokens=0)

        @pytest.mark.efficiency(rounds=2, warmup=0)
        def test_no_samples_in_a_window(efficiency):
            with efficiency.window(samples=0):
                pass

        @pytest.mark.efficiency(rounds=2, warmup=0)
        def test_copy(efficiency):
            run = efficiency.measure(lambda: None, flops=0, tokens=4)
            assert run["flops"].value == 0 and run["tokens_per_s"].value > 0
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--efficiency-gate=off")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*MeasurementError: test_the_fixture_reports_a_bad_count_as_misuse_naming_the_test.py::test_no_tokens: "
            "tokens=0: must be an int of 1 or more; leave tokens= out where there is none",
            "*MeasurementError: *::test_no_new_tokens: max_new_tokens=0: must be an int of 1 or more",
            "*MeasurementError: *::test_no_samples_in_a_window: samples=0: must be an int of 1 or more*",
        ]
    )
