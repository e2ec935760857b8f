import math

import pytest

from mosr.metrics import Rate, verdict_rates, wilson


def test_wilson_matches_hand_computed_values():
    # k=5, n=10: centre (0.5 + 1.92/10)/(1+0.384) = 0.5; half = 1.96*sqrt(0.025+0.00960)/1.384
    low, high = wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_verdict_rates_keep_unjudged_in_denominator():
    r = verdict_rates(["refusal", "gibberish", "compliance", "unjudged"])
    assert r["n"] == 4
    assert r["not_complied"]["rate"] == 0.5
    assert r["unjudged"]["k"] == 1
    with pytest.raises(ValueError, match="unknown verdicts"):
        verdict_rates(["maybe"])


def test_rate_format():
    assert Rate.of(1, 4).fmt().startswith("25.0% [")
    assert Rate.of(0, 0).fmt() == "n/a (n=0)"
