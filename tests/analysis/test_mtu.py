"""MTU analysis with data: the tunnel overhead fitted to measured (inner, outer) sizes for
ESP-in-UDP and raw ESP and each padding block, the words it is told in, and when a run whose
larger probes failed is still a healthy path."""

from __future__ import annotations

import pytest

from tracer.analysis.mtu import _fit, _padded, mtu_status, mtu_summary, overhead_words
from tracer.model.mtu import MtuReport, SizeResult, TunnelOverhead
from tracer.model.verdict import Status


def esp(inner: int, fixed: int, block: int, udp: bool = True) -> tuple[int, int, bool]:
    return inner, fixed + _padded(inner, block), udp


SEARCH = (576, 1500, 988, 1194, 1297, 1245, 1219, 1206, 1212, 1215, 1217, 1218)


@pytest.mark.parametrize(("fixed", "block"), [(60, 4), (56, 16), (52, 8), (40, 4)])
def test_overhead_fit_finds_fixed_part_and_block(fixed, block):
    assert _fit([esp(i, fixed, block) for i in SEARCH]) == (block, fixed)


def test_sizes_too_alike_leave_the_block_unknown():
    assert _fit([esp(i, 60, 4) for i in (576, 1400)]) == (None, None)  # both fit 4- and 8-byte blocks


def test_raw_esp_is_not_called_udp():
    raw = TunnelOverhead("gw:ipsec0", udp=False, fixed=52, block=4, least=54, most=57, samples=9)
    text = overhead_words(raw)
    assert "raw ESP, IP protocol 50: outer IPv4 20 + ESP header 8 + IV and ICV 24" in text and "UDP" not in text
    nat_t = TunnelOverhead("gw:ipsec0", udp=True, fixed=60, block=4, least=62, most=65, samples=9)
    assert overhead_words(nat_t).startswith(
        "60 bytes + 2–5 of ESP trailer and padding to 4-byte blocks at gw:ipsec0 (ESP-in-UDP: outer IPv4 20 + UDP 8 "
        "+ ESP header 8 + IV and ICV 24); 62–65 bytes on the 9 probes measured")


def report(sizes: list[SizeResult], blackhole: bool, exact: bool = True) -> MtuReport:
    ok = [r.size for r in sizes if r.delivered == r.sent]
    lost = [r.size for r in sizes if r.delivered < r.sent and r.size > max(ok)]
    return MtuReport(tuple(sizes), max(ok), min(lost, default=None), path_mtu=max(ok), exact=exact,
                     limit=next((r.where for r in sizes if r.size == min(lost, default=0)), None), blackhole=blackhole)


FN = "ICMP fragmentation needed from west-gw (192.0.2.1), next-hop MTU 1400"


def test_larger_probes_refused_with_frag_needed_is_a_healthy_path():
    m = report([SizeResult(576, 1, 1), SizeResult(1400, 1, 1), SizeResult(1401, 1, 0, "inside west-gw", icmp=FN)], False)
    assert mtu_status(m, Status.LOSS) == Status.DELIVERED
    assert mtu_summary(m) == f"path MTU 1400 bytes: 1400-byte probes delivered, 1401-byte probes refused with {FN}"


def test_silent_loss_above_the_mtu_is_a_blackhole_and_small_loss_stays_loss():
    m = report([SizeResult(576, 1, 1), SizeResult(1218, 1, 1), SizeResult(1219, 2, 0, "inside router")], True)
    assert mtu_status(m, Status.LOSS) == Status.LOSS
    assert mtu_summary(m) == ("path MTU 1218 bytes: 1218-byte probes delivered, 1219-byte probes lost inside router: "
                              "a PMTUD blackhole")
    small = report([SizeResult(576, 2, 1, "inside router"), SizeResult(1400, 1, 1), SizeResult(1401, 1, 0, icmp=FN)],
                   False)
    assert mtu_status(small, Status.LOSS) == Status.LOSS


def test_a_ladder_gives_a_range_not_a_byte():
    m = report([SizeResult(1200, 1, 1), SizeResult(1250, 1, 0, "inside router")], True, exact=False)
    assert mtu_summary(m).startswith("path MTU 1200–1249 bytes: ")


@pytest.mark.parametrize(("raw", "carrier", "fixed"), [
    (True, "raw ESP, IP protocol 50: outer IPv4 20 + ESP header 8 + IV and ICV 24", 52),
    (False, "ESP-in-UDP: outer IPv4 20 + UDP 8 + ESP header 8 + IV and ICV 24", 60)])
def test_overhead_of_real_aes_gcm_esp_raw_or_in_udp(tmp_path, raw, carrier, fixed):
    # Real AES-GCM-16 ESP (8-byte IV, 16-byte ICV) built by scapy, probes of sizes that tell the
    # padding blocks apart: the same fit and the same words whatever the probe size.
    from tests.synth import Scenario, build
    from tracer.model.tag import ProbeKind
    from tracer.run.replay import load_run, replay_run

    payloads = {q: size - 28 for q, size in enumerate((576, 1001, 1202, 1299, 1403))}
    sc = Scenario(kind=ProbeKind.MTU, count=len(payloads), sizes=payloads, df=True, raw_esp=raw, esp_key=bytes(range(20)))
    (v,) = replay_run(load_run([build(sc, tmp_path / "run")]))
    t = v.mtu.tunnel
    assert (t.udp, t.fixed, t.block, t.samples) == (not raw, fixed, 4, 5)
    assert f"the tunnel adds {fixed} bytes + 2–5 of ESP trailer and padding to 4-byte blocks at west-gw:ipsec0 ({carrier})" \
        in "\n".join(v.diagnoses)


def test_recorded_searches_replay_to_the_exact_mtu():
    # Recorded on the lab (scripts/record_scenarios.py): the healthy tunnel and the mtu-blackhole fault.
    from tests.cli.tracer_cmd import CAPTURES
    from tracer.run.replay import load_run, replay_run

    (ok,) = replay_run(load_run([CAPTURES / "mtu-search-ok"]))
    m = ok.mtu
    assert (ok.exit_code, m.path_mtu, m.exact, m.blackhole, m.bottleneck, m.bottleneck_mtu) == (
        0, 1400, True, False, "west-gw:ipsec0", 1400)
    assert [(f.node, f.size, f.next_hop_mtu, f.reached_source) for f in m.frag_needed] == [
        ("west-gw", 1401, 1400, True), ("west-gw", 1500, 1400, True)]
    assert sum(r.sent for r in m.sizes) == 4

    (bh,) = replay_run(load_run([CAPTURES / "mtu-search-blackhole"]))
    m = bh.mtu
    assert (bh.exit_code, m.path_mtu, m.smallest_lost, m.exact, m.blackhole) == (1, 1218, 1219, True, True)
    assert (m.bottleneck, m.bottleneck_mtu) == ("router:eth1", 1280)
    # The truth from the link: the largest inner size whose ESP packet fits 1280 bytes.
    t = m.tunnel
    assert m.path_mtu == max(n for n in range(576, 1500) if t.fixed + _padded(n, t.block) <= 1280)
    assert sum(r.sent for r in m.sizes) == 14
