"""``tracer replay`` on the recorded divergence scenarios: the observed path and divergence lines."""

from __future__ import annotations

from tests.cli.tracer_cmd import CAPTURES, tracer


def test_routing_loop_prints_the_observed_path_round_the_loop_and_exits_1() -> None:
    r = tracer("replay", CAPTURES / "routing-loop")
    assert (r.code, r.err) == (1, ""), r
    observed = [line for line in r.out.splitlines() if line.startswith("observed path (request seq ")]
    assert len(observed) == 1, r.out
    assert " → ⟲ west-gw:wan0" in observed[0]
    assert "west-gw:wan0 [clear, leak] → router:eth0 [clear, leak]" in observed[0]
    assert "diverged (request): left west-gw by wan0 in the clear instead of into ipsec0" in r.out.splitlines()


def test_asymmetric_return_routed_is_delivered_and_says_how_the_replies_diverged() -> None:
    r = tracer("replay", CAPTURES / "asymmetric-return-routed")
    assert (r.code, r.err) == (0, ""), r
    assert ("diverged (reply): left east-gw by wan0 in the clear instead of into ipsec0, "
            "and rejoined the expected path at west-gw:lan0") in r.out.splitlines()
