"""`efficiency.generate`: fixed work per round, tokens counted from ids, TTFT and TPOT."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")


@pytest.mark.parametrize("warmup", [1, 0])  # with 0 the counting run comes after the rounds
def test_generate_records_ttft_tpot_and_counted_tokens(pytester: pytest.Pytester, warmup: int) -> None:
    pytester.makepyfile(
        """
        import pytest, torch
        from transformers import LlamaConfig, LlamaForCausalLM

        @pytest.mark.efficiency(rounds=3, warmup=WARMUP)
        def test_decode(efficiency):
            torch.manual_seed(0)
            cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
            model = LlamaForCausalLM(cfg).eval()
            ids = torch.randint(0, 128, (2, 5))
            run = efficiency.generate(model, ids, max_new_tokens=6, do_sample=False)
            assert run["tokens"].value == 2 * 6
            assert run["TTFT"].value > 0
            assert len(run["TTFT"].samples) == 3
            # first token comes before the end of each round; TPOT is the rest spread over 5 tokens
            for e2e, first, tpot in zip(run["AL"].samples, run["TTFT"].samples, run["TPOT"].samples):
                assert 0 < first < e2e
                assert tpot == pytest.approx((e2e - first) / 5)
            assert run["AT"].value == pytest.approx(12 * 3 / run["wall_time"].value)
            assert run.settings["max_new_tokens"] == 6
            assert run["flops"].source == "counted" and run["flops"].value > 0
        """.replace("WARMUP", str(warmup))
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
