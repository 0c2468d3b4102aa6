"""Believe the packets, not the topology: recorded runs replayed with a topology edited so an
expected path has no route (or ends short), against what the captures really saw."""

from __future__ import annotations

import json
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path

import tomli_w

from tracer.cli.render import render_text
from tracer.model.direction import Direction
from tracer.model.verdict import Outcome, Status, Verdict
from tracer.run.replay import load_run, replay_run

CAPTURES = Path(__file__).resolve().parents[2] / "captures"
TEMPLATE = CAPTURES / "dead-responder" / "netstate" / "east-gw.json"  # a real snapshot's shape
REQ, REP = Direction.REQUEST, Direction.REPLY
NO_ROUTE_BACK = "east has no route to 192.0.2.10"


def no_routes(node: str) -> Callable[[dict], None]:
    return lambda d: d["nodes"][node].pop("routes")


def replay(tmp_path: Path, scenario: str, edit: Callable[[dict], None], without: tuple[str, ...] = (),
           east_routes: list[dict] | None = None) -> Verdict:
    """Replay a copy of ``scenario`` whose topology ``edit`` changed, without the captures of
    ``without``; ``east_routes``: a live routing table for east in the run's netstate."""
    run = tmp_path / scenario
    shutil.copytree(CAPTURES / scenario, run)
    topo = tomllib.loads((run / "topology.toml").read_text())
    edit(topo)
    (run / "topology.toml").write_text(tomli_w.dumps(topo))
    manifest = json.loads((run / "manifest.json").read_text())
    for c in [c for c in manifest["captures"] if c["point"] in without]:
        (run / c["file"]).unlink()
        manifest["captures"].remove(c)
    if east_routes is not None:
        state = json.loads(TEMPLATE.read_text())
        state.update(node="east", netns="trc-rec-east", routes=east_routes)
        state["interfaces"] = [i for i in state["interfaces"] if i["name"] == "lo"] + [
            {**next(i for i in state["interfaces"] if i["name"] == "lan0"), "name": "eth0",
             "addresses": ["198.51.100.10/24"]}]
        (run / "netstate").mkdir(exist_ok=True)
        (run / "netstate" / "east.json").write_text(json.dumps(state))
        manifest["netstate"] = "netstate"
    (run / "manifest.json").write_text(json.dumps(manifest))
    (v,) = replay_run(load_run([run]))
    return v


def connected(via_default: bool) -> list[dict]:
    def route(dst: str, via: str | None, scope: str) -> dict:
        return {"table": "main", "dst": dst, "type": "unicast", "dev": "eth0", "via": via, "proto": "kernel",
                "scope": scope, "metric": None, "prefsrc": None}

    return [route("198.51.100.0/24", None, "link")] + ([route("0.0.0.0/0", "198.51.100.1", "global")] if via_default else [])


def of(v: Verdict, direction: Direction) -> list:
    return [f for f in v.findings if f.direction == direction]


def test_replies_seen_back_at_the_source_are_delivered_whatever_the_topology_says(tmp_path):
    """The bug: the topology's missing route back beat three replies seen arriving at west."""
    v = replay(tmp_path, "all-delivered", no_routes("east"))
    assert not v.paths[REP].hops and v.paths[REP].end_note == NO_ROUTE_BACK
    assert v.status == Status.DELIVERED, v.summary
    assert v.summary == "3/3 echo requests delivered and answered (west → east)"
    assert [(f.outcome, f.count, f.total, f.where, f.last_seen) for f in of(v, REP)] == [
        (Outcome.DELIVERED, 3, 3, "delivered to west", "west:eth0")]
    assert ("topology gives east no route back to 192.0.2.10 but 3/3 echo replies were seen at west:eth0 — "
            "the topology may be stale") in v.warnings
    assert [o.seen[-1].point for o in v.observed if o.direction == REP] == ["west:eth0"] * 3


def test_replies_never_seen_are_lost_at_east_and_the_topology_is_only_likely(tmp_path):
    v = replay(tmp_path, "no-return-route", no_routes("east"))
    assert v.status == Status.LOSS
    (f,) = of(v, REP)
    assert (f.outcome, f.count, f.where, f.first_missed) == (Outcome.LOST, 3, f"at east: {NO_ROUTE_BACK}", "east:eth0")
    assert f.reason == f"likely: {NO_ROUTE_BACK} (by the topology)"
    assert not [w for w in v.warnings if "may be stale" in w]


def test_a_request_loss_upstream_is_still_located_and_no_reply_is_blamed(tmp_path):
    v = replay(tmp_path, "gw-forward-drop", no_routes("east"))
    assert v.status == Status.LOSS
    assert [(f.outcome, f.count, f.where) for f in of(v, REQ)] == [
        (Outcome.LOST, 3, "inside west-gw between lan0 and ipsec0 (forward)")]
    assert of(v, REP) == []  # no request arrived, no reply was expected, none was seen


def test_unseen_replies_with_the_start_node_uncaptured_are_inconclusive(tmp_path):
    """east has a second interface nobody captured: the replies may have left by it, unseen."""
    def second_nic(d: dict) -> None:
        no_routes("east")(d)
        d["nodes"]["east"]["interfaces"]["eth1"] = {"addresses": ["203.0.113.10/24"], "role": "lan"}

    v = replay(tmp_path, "no-return-route", second_nic)
    (f,) = of(v, REP)
    assert (f.outcome, v.status) == (Outcome.INCONCLUSIVE, Status.INCONCLUSIVE)
    assert f.reason.startswith("east:eth1 not captured")


def test_without_the_destination_capture_nothing_is_blamed_on_the_missing_route(tmp_path):
    v = replay(tmp_path, "no-return-route", no_routes("east"), without=("east:eth0",))
    assert v.status == Status.INCONCLUSIVE
    assert [f.outcome for f in v.findings] == [Outcome.INCONCLUSIVE]  # the requests' arrival is unknown


def test_the_live_routing_table_confirms_the_missing_route(tmp_path):
    v = replay(tmp_path, "no-return-route", no_routes("east"), east_routes=connected(via_default=False))
    (f,) = of(v, REP)
    assert f.outcome == Outcome.LOST
    assert f.reason == "east has no route to 192.0.2.10 (live routing tables)"
    assert f.evidence == ("east: the kernel had no route to 192.0.2.10 (its live routing tables when the run started)",)


def test_a_live_route_back_keeps_the_topology_a_guess(tmp_path):
    v = replay(tmp_path, "no-return-route", no_routes("east"), east_routes=connected(via_default=True))
    (f,) = of(v, REP)
    assert f.outcome == Outcome.LOST and f.reason.startswith(f"likely: {NO_ROUTE_BACK} (by the topology); "
                                                             "but east's live routing tables had one (dev eth0)")


def test_a_path_that_ends_short_midway_does_not_beat_replies_seen_arriving(tmp_path):
    """east-gw without routes: the expected reply path ends at east-gw:ipsec0, yet the replies
    came out of west-gw's tunnel and reached west (they used to be 'lost inside west')."""
    v = replay(tmp_path, "all-delivered", no_routes("east-gw"))
    assert v.paths[REP].hops and not v.paths[REP].delivered
    assert v.status == Status.DELIVERED, v.summary
    assert [(f.outcome, f.count, f.last_seen) for f in of(v, REP)] == [(Outcome.DELIVERED, 3, "west:eth0")]
    assert ("topology says east-gw has no route to 198.18.1.1 but 3/3 echo replies were seen at west:eth0 — "
            "the topology may be stale") in v.warnings


def test_a_path_end_with_a_way_on_uncaptured_is_inconclusive(tmp_path):
    """Selector mismatch: seen at west-gw:ipsec0 and nowhere after. With west-gw:wan0 captured it
    is lost there (golden); without, the ESP may have left unseen: inconclusive."""
    v = replay(tmp_path, "selector-mismatch", lambda d: None, without=("west-gw:wan0",))
    (f,) = of(v, REQ)
    assert (f.outcome, f.where) == (Outcome.INCONCLUSIVE, "somewhere after west-gw:ipsec0")
    assert f.reason.startswith("west-gw:wan0 not captured")


def test_requests_the_topology_gives_no_route_are_followed_to_the_destination(tmp_path):
    """The same for the request direction: west without routes, yet its requests reached east
    (and east's replies then came back along their expected path)."""
    v = replay(tmp_path, "all-delivered", no_routes("west"))
    assert not v.paths[REQ].hops
    assert v.status == Status.DELIVERED and v.summary == "3/3 echo requests delivered and answered (west → east)"
    assert [(f.outcome, f.last_seen) for f in of(v, REQ)] == [(Outcome.DELIVERED, "east:eth0")]
    assert [(f.outcome, f.count) for f in of(v, REP)] == [(Outcome.DELIVERED, 3)]  # replies were expected
    assert ("topology gives west no route to 198.51.100.10 but 3/3 echo requests were seen at east:eth0 — "
            "the topology may be stale") in v.warnings
    assert render_text(v).splitlines()[0].startswith("tracer ping: west (192.0.2.10) → east (198.51.100.10)")


def test_mtu_sizes_are_judged_by_the_sightings_without_a_request_path(tmp_path):
    v = replay(tmp_path, "mtu-ladder-blackhole", no_routes("west"))
    assert v.mtu is not None
    assert [(r.size, r.delivered, r.sent) for r in v.mtu.sizes] == [(1000, 1, 1), (1200, 1, 1), (1250, 0, 1), (1300, 0, 1)]
    assert v.mtu.largest_delivered == 1200


def test_fragmentation_needed_that_reached_the_source_counts_without_a_request_path(tmp_path):
    """It used to count as reaching the source only at the expected path's first point: with
    west routeless, the answered 1401-byte probe became 'a PMTUD blackhole'."""
    v = replay(tmp_path, "mtu-search-ok", no_routes("west"))
    assert v.status == Status.DELIVERED, v.summary
    assert "refused with ICMP fragmentation needed from west-gw (192.0.2.1)" in v.summary
    assert "blackhole" not in v.summary
