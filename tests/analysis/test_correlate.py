"""correlate: hand-made observations on the minisite topology → the (probes × hops) sighting
matrix, first-seen times and ESP identities, all written out by hand.

Request path (tests/analysis/minisite.py), ``*`` = ESP of tunnel ab:

    0 a:eth0  1 gwa:lan0  2 gwa:ipsec0  3 gwa:wan0*  4 r:eth0*  5 r:eth1*  6 gwb:wan0*  7 gwb:lan0  8 b:eth0
"""

from __future__ import annotations

from ipaddress import IPv4Address

import numpy as np

from tests.analysis.minisite import (
    GWA_WAN,
    GWB_WAN,
    HOP_NS,
    PING,
    POINTS,
    REQUEST_EDGES,
    REQUEST_HOPS,
    RUN,
    SPI_AB,
    SPI_BA,
    echo,
    esp,
    observations,
    path,
    reply_rows,
    request_rows,
    topology,
    udp,
)
from tracer.analysis.correlate import SightingMatrix, correlate
from tracer.model.direction import Direction
from tracer.model.observations import Observations
from tracer.model.probe import DecryptedTags, ProbeIdentity
from tracer.model.tag import ProbeKind
from tracer.model.verdict import Sighting

S, M, U, R, K, G = (Sighting.SEEN, Sighting.MISSED, Sighting.UNOBSERVED, Sighting.UNRELIABLE,
                    Sighting.UNKNOWN, Sighting.GAP)
T0 = 1_700_000_000_000_000_000
MS = 1_000_000
US = 1_000


def T(k: int) -> int:
    """Probe k leaves a at T(k): 1 ms apart, far closer than the 200 ms encap window, so the
    FIFO bound (the previous ESP packet) is what keeps probes apart."""
    return T0 + k * MS


def key(esp_seq: int, spi: int = SPI_AB) -> int:
    return (spi << 32) | esp_seq


def run(obs: Observations, n: int = 3, direction: Direction = Direction.REQUEST, **kw: object) -> SightingMatrix:
    return correlate(obs, topology(), path(direction), RUN, PING, direction, np.arange(n, dtype=np.uint32), **kw)


def codes(s: SightingMatrix) -> list[list[Sighting]]:
    names = list(Sighting)
    return [[names[c] for c in row] for row in s.codes.tolist()]


def three_probes(skip: dict[int, set[int]] | None = None) -> list[dict[str, int]]:
    """Probes 0..2 at every hop (ESP seq 101..103), minus ``skip``: probe → hops not captured."""
    skip = skip or {}
    return [r for k in range(3)
            for r in request_rows(T(k), k, 101 + k, [h for h in range(9) if h not in skip.get(k, set())])]


def test_path_is_the_hand_written_one():
    p = path()
    assert [(h.point, "esp" if h.esp else "clear") for h in p.hops] == REQUEST_HOPS
    assert [e.value for e in p.edges] == REQUEST_EDGES
    assert {h.esp.spi for h in p.hops if h.esp} == {SPI_AB}


def test_all_seen():
    s = run(observations(three_probes()))
    assert s.seqs.tolist() == [0, 1, 2]
    assert codes(s) == [[S] * 9] * 3
    assert s.times[1].tolist() == [
        T0 + 1_000_000, T0 + 1_010_000, T0 + 1_020_000, T0 + 1_030_000, T0 + 1_040_000,
        T0 + 1_050_000, T0 + 1_060_000, T0 + 1_070_000, T0 + 1_080_000]
    assert s.esp_keys.tolist() == [
        [0, 0, 0, 0xC0000001_00000065, 0xC0000001_00000065, 0xC0000001_00000065, 0xC0000001_00000065, 0, 0],
        [0, 0, 0, 0xC0000001_00000066, 0xC0000001_00000066, 0xC0000001_00000066, 0xC0000001_00000066, 0, 0],
        [0, 0, 0, 0xC0000001_00000067, 0xC0000001_00000067, 0xC0000001_00000067, 0xC0000001_00000067, 0, 0],
    ]
    assert (s.leaks, s.confirmed, s.disagreements) == ([], 0, 0)


def test_only_this_runs_requests_count():
    rows = request_rows(T(0), 0, 101)
    rows += [echo("a:eth0", T(1), 1, run=RUN + 1), echo("b:eth0", T(1) + 80 * US, 1, run=RUN + 1)]  # another run
    rows += [echo("a:eth0", T(2), 2, kind=ProbeKind.MTU), echo("b:eth0", T(2) + 80 * US, 2, kind=ProbeKind.MTU)]
    rows += [echo("b:eth0", T(1) + 500 * US, 1, reply=True), echo("a:eth0", T(1) + 580 * US, 1, reply=True)]
    obs = observations(rows)
    assert codes(run(obs)) == [[S] * 9, [M] * 9, [M] * 9]
    # The reply path sees only the reply of probe 1 (at its two ends; the gateways' captures
    # between them have it in no form: capture noise, since it arrived).
    assert codes(run(obs, direction=Direction.REPLY)) == [[M] * 9, [S, G, G, G, G, G, G, G, S], [M] * 9]


def test_missed_at_one_point_but_seen_downstream_is_a_gap():
    # Probe 1 is missing from gwa:lan0 (clear) and r:eth0 (its ESP packet).
    s = run(observations(three_probes({1: {1, 4}})))
    assert codes(s) == [[S] * 9, [S, G, S, S, G, S, S, S, S], [S] * 9]
    assert s.times[1].tolist() == [T0 + MS, -1, T0 + MS + 20 * US, T0 + MS + 30 * US, -1,
                                   T0 + MS + 50 * US, T0 + MS + 60 * US, T0 + MS + 70 * US, T0 + MS + 80 * US]
    # Its ESP identity was learnt at the encapsulating gateway and holds on every tunnel hop.
    assert s.esp_keys[1].tolist() == [0, 0, 0, key(102), key(102), key(102), key(102), 0, 0]


def test_capture_gap_where_the_probe_enters_the_sa():
    # Probe 1 is not in gwa:ipsec0's capture (no drops reported): its ESP identity is learnt
    # where it leaves the SA instead, and the hop is a gap.
    s = run(observations(three_probes({1: {2}})))
    assert codes(s) == [[S] * 9, [S, S, G, S, S, S, S, S, S], [S] * 9]
    assert s.esp_keys[1].tolist() == [0, 0, 0, key(102), key(102), key(102), key(102), 0, 0]


def test_reply_direction_uses_the_reverse_sa():
    # Replies leave b 500 µs after each request; gwb encapsulates them (policy-based, seen
    # leaving wan0 as ESP of SPI 0xc0000002), gwa decapsulates them into ipsec0.
    rows = three_probes() + [r for k in range(3) for r in reply_rows(T(k) + 500 * US, k, 201 + k)]
    s = run(observations(rows), direction=Direction.REPLY)
    assert codes(s) == [[S] * 9] * 3
    assert s.esp_keys[2].tolist() == [0, 0, key(203, SPI_BA), key(203, SPI_BA), key(203, SPI_BA), key(203, SPI_BA),
                                      0, 0, 0]
    assert s.times[0].tolist() == [T0 + 500 * US + h * 10 * US for h in range(9)]


def test_point_without_capture_is_unobserved():
    points = [p for p in POINTS if p != "r:eth0"]
    rows = [r for r in three_probes() if r["point"] != "r:eth0"]
    s = run(observations(rows, points))
    assert codes(s) == [[S, S, S, S, U, S, S, S, S]] * 3
    assert s.esp_keys[0].tolist() == [0, 0, 0, key(101), 0, key(101), key(101), 0, 0]
    assert s.times[0, 4] == -1


def test_captured_point_with_no_rows_is_a_miss_not_unobserved():
    s = run(observations(three_probes({0: {4}, 1: {4}, 2: {4}})))  # r:eth0 in obs.points, but empty
    assert codes(s) == [[S, S, S, S, G, S, S, S, S]] * 3


def test_sniffer_drops_make_a_miss_unreliable():
    # r:eth1's sniffer dropped packets. Probe 1 is not in its capture but arrived (a gap);
    # probe 2 was last seen at r:eth0: its absence at r:eth1 proves nothing, further on it does.
    s = run(observations(three_probes({1: {5}, 2: {5, 6, 7, 8}})), drops={"r:eth1": 7, "r:eth0": 0})
    assert codes(s) == [[S] * 9, [S, S, S, S, S, G, S, S, S], [S, S, S, S, S, R, M, M, M]]


def test_sniffer_drops_before_the_tunnel_leave_the_esp_hops_unknown():
    # gwa:ipsec0 dropped packets and the probe is not in it: whether it entered the SA is unknown.
    rows = request_rows(T(0), 0, 101, [0, 1])
    s = run(observations(rows), 1, drops={"gwa:ipsec0": 2})
    assert codes(s) == [[S, S, R, K, K, K, K, M, M]]


def test_esp_of_other_sas_is_not_taken_for_the_probe():
    rows = request_rows(T(0), 0, 101)
    # Between the probe entering gwa and its ESP leaving: ESP of an older SA between the same
    # gateways (another SPI), and of a tunnel to another peer. Neither is the probe's.
    rows += [esp("gwa:wan0", T(0) + 25 * US, 7, spi=0xBEEF0001, src=GWA_WAN, dst=GWB_WAN),
             esp("gwa:wan0", T(0) + 26 * US, 8, spi=0xBEEF0002, src=GWA_WAN, dst=IPv4Address("192.0.2.99"))]
    s = run(observations(rows), 1)
    assert codes(s) == [[S] * 9]
    assert s.esp_keys[0].tolist() == [0, 0, 0, key(101), key(101), key(101), key(101), 0, 0]
    assert s.times[0, 3] == T(0) + 30 * US


def test_esp_identity_learnt_at_the_decapsulating_gateway():
    # No capture on gwa:wan0: the (SPI, seq) comes from gwb, the last ESP in before the probe came out.
    points = [p for p in POINTS if p != "gwa:wan0"]
    rows = [r for r in three_probes() if r["point"] != "gwa:wan0"]
    s = run(observations(rows, points))
    assert codes(s) == [[S, S, S, U, S, S, S, S, S]] * 3
    assert s.esp_keys[2].tolist() == [0, 0, 0, 0, key(103), key(103), key(103), 0, 0]


def background(t: int, hops: list[int]) -> list[dict[str, int]]:
    """Untagged a → b UDP (in the SA) at the given clear hops, hop h at t + h·10 µs."""
    return [udp(REQUEST_HOPS[h][0], t + h * HOP_NS) for h in hops]


def test_ambiguous_at_encap_resolved_at_decap():
    # Background entered gwa 2 µs after the probe, before the probe's ESP left: at gwa either
    # ESP packet could be the probe's. At gwb, ESP 101 arrived, the probe came out, and only
    # then ESP 102 arrived: there it is unambiguous.
    rows = request_rows(T(0), 0, 101)
    rows += background(T(0) + 2 * US, [0, 1, 2])
    rows += [esp("gwa:wan0", T(0) + 33 * US, 102), esp("r:eth0", T(0) + 43 * US, 102),
             esp("r:eth1", T(0) + 53 * US, 102), esp("gwb:wan0", T(0) + 75 * US, 102),
             udp("gwb:lan0", T(0) + 85 * US), udp("b:eth0", T(0) + 95 * US)]
    s = run(observations(rows), 1)
    assert codes(s) == [[S] * 9]
    assert s.esp_keys[0].tolist() == [0, 0, 0, key(101), key(101), key(101), key(101), 0, 0]


def ambiguous_loss() -> list[dict[str, int]]:
    """The probe and background entered gwa 2 µs apart, one ESP packet (101) left, and only the
    background came out at gwb: which of the two the ESP carried is unknown without keys."""
    rows = request_rows(T(0), 0, 0, [0, 1, 2])
    rows += background(T(0) + 2 * US, [0, 1, 2, 7, 8])
    rows += [esp(p, T(0) + h * HOP_NS + 2 * US, 101) for h, (p, form) in enumerate(REQUEST_HOPS) if form == "esp"]
    return rows


def test_esp_ambiguity_is_unknown():
    s = run(observations(ambiguous_loss()), 1)
    assert codes(s) == [[S, S, S, K, K, K, K, M, M]]
    assert s.esp_keys[0].tolist() == [0] * 9


def test_nothing_left_the_gateway_after_the_probe_is_a_plain_miss():
    # The only ESP of the SA left gwa half a millisecond before the probe came in.
    rows = request_rows(T(0), 0, 0, [0, 1, 2])
    rows += background(T(0) - 500 * US, [0, 1, 2])
    rows += [esp(p, T(0) - 500 * US + h * HOP_NS, 101) for h, (p, form) in enumerate(REQUEST_HOPS) if form == "esp"]
    s = run(observations(rows), 1)
    assert codes(s) == [[S, S, S, M, K, K, K, M, M]]


def test_never_entered_the_sa_is_missed_on_every_esp_hop():
    # Seen on gwa:lan0, not on gwa:ipsec0 (captured, no drops); background ESP flows meanwhile.
    rows = request_rows(T(0), 0, 0, [0, 1])
    rows += background(T(0) + 15 * US, [2])
    rows += [esp(p, T(0) + h * HOP_NS, 101) for h, (p, form) in enumerate(REQUEST_HOPS) if form == "esp"]
    s = run(observations(rows), 1)
    assert codes(s) == [[S, S, M, M, M, M, M, M, M]]


def leaked_rows(hops: list[int]) -> list[dict[str, int]]:
    """The tagged echo in the clear at ``hops``, ESP hops included (no SA: it leaks)."""
    return [echo(REQUEST_HOPS[h][0], T(0) + h * HOP_NS, 0) for h in hops]


def test_probe_in_the_clear_on_esp_hops_is_a_leak():
    # No SA: gwa routes it out wan0 in the clear (never through ipsec0), gwb drops it.
    s = run(observations(leaked_rows([0, 1, 3, 4, 5, 6])), 1)
    assert s.leaks == ["gwa:wan0", "r:eth0", "r:eth1", "gwb:wan0"]
    assert codes(s) == [[S, S, M, M, M, M, M, M, M]]
    assert s.times[0].tolist() == [T0, T0 + 10 * US, -1, -1, -1, -1, -1, -1, -1]


def test_leak_that_arrives_is_still_reported():
    s = run(observations(leaked_rows([0, 1, 3, 4, 5, 6, 7, 8])), 1)
    assert s.leaks == ["gwa:wan0", "r:eth0", "r:eth1", "gwb:wan0"]
    assert codes(s) == [[S, S, G, G, G, G, G, S, S]]


def probe_id(seq: int, direction: Direction = Direction.REQUEST, run_id: int = RUN) -> ProbeIdentity:
    return ProbeIdentity(run_id, PING, seq, direction)


def test_decryption_confirms_the_keyless_association():
    decrypted = DecryptedTags({
        (SPI_AB, 101): probe_id(0), (SPI_AB, 102): probe_id(1), (SPI_AB, 103): probe_id(2),
        (SPI_BA, 101): probe_id(0, Direction.REPLY),  # the other direction: not this path's
        (SPI_AB, 104): probe_id(0, run_id=RUN + 1),  # another run
        (SPI_AB, 100): None,  # background
    })
    s = run(observations(three_probes()), decrypted=decrypted)
    assert codes(s) == [[S] * 9] * 3
    assert s.esp_keys[:, 3].tolist() == [key(101), key(102), key(103)]
    assert (s.confirmed, s.disagreements) == (3, 0)


def hidden_background() -> list[dict[str, int]]:
    """Background entered gwa just before the probe but is in no capture on the clear side:
    its ESP (101) leaves first, the probe's (102) right after."""
    rows = request_rows(T(0), 0, 102)
    rows += [esp(p, T(0) + h * HOP_NS - 2 * US, 101) for h, (p, form) in enumerate(REQUEST_HOPS) if form == "esp"]
    return rows


def test_keyless_association_can_be_wrong_and_decryption_wins():
    keyless = run(observations(hidden_background()), 1)
    assert codes(keyless) == [[S] * 9]
    assert keyless.esp_keys[0, 3] == key(101) and keyless.times[0, 3] == T(0) + 28 * US  # the wrong packet

    decrypted = DecryptedTags({(SPI_AB, 101): None, (SPI_AB, 102): probe_id(0)})
    s = run(observations(hidden_background()), 1, decrypted=decrypted)
    assert codes(s) == [[S] * 9]
    assert s.esp_keys[0].tolist() == [0, 0, 0, key(102), key(102), key(102), key(102), 0, 0]
    assert s.times[0, 3:7].tolist() == [T(0) + 30 * US, T(0) + 40 * US, T(0) + 50 * US, T(0) + 60 * US]
    assert (s.confirmed, s.disagreements) == (1, 1)


def test_decryption_identifies_a_carrier_the_keyless_association_could_not():
    # Probe and background entered gwa 2 µs apart and came out of gwb 2 µs apart: ambiguous on
    # both sides without keys.
    rows = request_rows(T(0), 0, 101)
    rows += background(T(0) + 2 * US, [0, 1, 2, 7, 8])
    rows += [esp(p, T(0) + h * HOP_NS + 2 * US, 102) for h, (p, form) in enumerate(REQUEST_HOPS) if form == "esp"]
    keyless = run(observations(rows), 1)
    assert codes(keyless) == [[S, S, S, G, G, G, G, S, S]]

    s = run(observations(rows), 1, decrypted=DecryptedTags({(SPI_AB, 101): probe_id(0), (SPI_AB, 102): None}))
    assert codes(s) == [[S] * 9]
    assert s.esp_keys[0, 6] == key(101)
    assert (s.confirmed, s.disagreements) == (1, 0)


def test_every_esp_packet_opened_and_none_is_the_probe_is_a_miss():
    # The ambiguous loss above, but with keys: the one ESP packet was the background.
    s = run(observations(ambiguous_loss()), 1, decrypted=DecryptedTags({(SPI_AB, 101): None}))
    assert codes(s) == [[S, S, S, M, M, M, M, M, M]]
    assert (s.confirmed, s.disagreements) == (0, 0)
