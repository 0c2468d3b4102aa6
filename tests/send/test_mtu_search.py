"""The path-MTU search without a network: the sizes it picks against simulated paths (a hop that
answers 'fragmentation needed', a silent blackhole, a lost packet, a lying hint), and which ICMP
errors it takes as quoting the probe in question."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import ICMP, IP

from tracer.model.tag import ProbeKind, ProbeTag, icmp_id_for
from tracer.send.echo import echo_request
from tracer.send.mtu import Attempt, Search, _match, quotes


def run_search(pmtu: int, frag_mtu: int | None = None, lost: tuple[int, ...] = (), low: int = 576,
               high: int = 1500) -> tuple[Search, list[int]]:
    """Sizes up to ``pmtu`` pass (unless their seq is in ``lost``); larger ones get a frag-needed
    announcing ``frag_mtu``, or nothing."""
    s = Search(low, high)
    sent: list[int] = []
    while (size := s.next_size()) is not None:
        assert len(sent) < 60, sent
        a = Attempt(len(sent), size, 0)
        if size <= pmtu and a.seq not in lost:
            a.rtt_ms = 1.0
        elif size > pmtu and frag_mtu is not None:
            a.icmp, a.next_hop_mtu = "fragmentation needed", frag_mtu
        s.record(a)
        sent.append(size)
    return s, sent


def test_a_hop_that_answers_is_measured_to_the_byte_in_four_probes():
    s, sent = run_search(1400, frag_mtu=1400)
    assert sent == [576, 1500, 1400, 1401]  # works at all, interface MTU, the hint, one byte above it
    assert (s.best(), s.ceiling()) == (1400, 1401)


def test_a_silent_blackhole_is_bisected_and_its_edge_confirmed():
    s, sent = run_search(1218)
    assert (s.best(), s.ceiling()) == (1218, 1219)
    assert len(sent) <= 14 and sent[-2:] == [1219, 1219]  # the silent failure above the answer, tried twice


def test_the_interface_mtu_passing_ends_the_search():
    s, sent = run_search(1500)
    assert sent == [576, 1500] and (s.best(), s.ceiling()) == (1500, None)


def test_one_lost_probe_does_not_lower_the_answer():
    s, sent = run_search(1218, lost=(2,))  # the first bisection probe (1038 bytes, fits) is lost
    assert (s.best(), s.ceiling()) == (1218, 1219) and sent.count(1038) == 2


def test_a_wrong_hint_is_checked_not_believed():
    s, _sent = run_search(1400, frag_mtu=1300)
    assert (s.best(), s.ceiling()) == (1400, 1401)


def test_a_path_that_fails_even_small_probes_stops_after_a_retry():
    s, sent = run_search(500)
    assert sent == [576, 576] and s.best() is None


DST = IPv4Address("198.51.100.10")
RUN = 0x1234ABCD


def error_about(seq: int, *, quote_len: int | None = None, run: int = RUN, dst: str = str(DST), code: int = 4,
                mtu: int = 1400) -> bytes:
    """An ICMP error from 192.0.2.1 quoting echo ``seq`` of ``run`` (its first ``quote_len`` bytes)."""
    probe = bytes(IP(src="192.0.2.10", dst=dst, flags="DF", proto=1) / echo_request(ProbeTag(run, ProbeKind.MTU, seq), 1372))
    quote = probe[:quote_len] if quote_len else probe[:576 - 28]
    return bytes(IP(src="192.0.2.1", dst="192.0.2.10") / ICMP(type=3, code=code, nexthopmtu=mtu) / quote)


def test_an_error_counts_only_when_it_quotes_this_probe():
    ident = icmp_id_for(RUN)
    assert quotes(error_about(3)[28:], DST, RUN, ProbeKind.MTU, ident, 3)
    assert not quotes(error_about(2)[28:], DST, RUN, ProbeKind.MTU, ident, 3)  # another probe (another size)
    assert not quotes(error_about(3, run=RUN + 2)[28:], DST, RUN, ProbeKind.MTU, ident, 3)  # another run
    assert not quotes(error_about(3, dst="198.51.100.11")[28:], DST, RUN, ProbeKind.MTU, ident, 3)
    # RFC 792's minimum quote (IP header + 8 bytes): id and seq decide, there is no tag to read.
    assert quotes(error_about(3, quote_len=28)[28:], DST, RUN, ProbeKind.MTU, ident, 3)


@pytest.mark.parametrize(("code", "words", "mtu"), [(4, "fragmentation needed", 1400), (1, "host unreachable", None)])
def test_match_reads_the_error_and_its_sender(code, words, mtu):
    a = Attempt(3, 1400, 0)
    _match(a, error_about(3, code=code), 10, DST, RUN, ProbeKind.MTU, icmp_id_for(RUN))
    assert (a.icmp, a.icmp_from, a.next_hop_mtu, a.passed) == (words, "192.0.2.1", mtu, False)
    other = Attempt(4, 1400, 0)
    _match(other, error_about(3, code=code), 10, DST, RUN, ProbeKind.MTU, icmp_id_for(RUN))
    assert other.icmp is None
