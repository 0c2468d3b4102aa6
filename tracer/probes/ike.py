"""IKE probes: tagged IKEv2 IKE_SA_INIT requests (the tag is the initiator SPI, which every
responder copies into its answer). "Is the responder reachable, and what does it answer?" —
the modern "stuck at STATE_MAIN_I1: open port 500" test (FreeS/WAN guide)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from tracer.errors import BadInput
from tracer.model.tag import ProbeKind
from tracer.probes import ProbeType, register

if TYPE_CHECKING:
    import numpy as np

    from tracer.model.direction import Direction
    from tracer.model.observations import Observations
    from tracer.model.probe import Endpoints, ProbeReport, SentProbe
    from tracer.model.topology import Topology
    from tracer.send.ike import Sent

FLAG_RESPONSE = 0x20  # IKE header flag R

EPILOG = """\
what it does:
  Sends --count IKEv2 IKE_SA_INIT requests from GW_A to GW_B (UDP 500, or 4500 behind
  the non-ESP marker with --port 4500), each tagged in its initiator SPI, while every
  capture point between the gateways records; then names the hop where requests or
  responses disappear, and prints what the responder answered. It never sends IKE_AUTH:
  the responder keeps a half-open IKE_SA until it times out (strongSwan: 30 s), and
  established IKE and CHILD SAs are untouched. The probes leave from an ephemeral port
  (the gateway's own IKE daemon owns 500/4500), which every responder answers.

  It offers AES-GCM-16 and AES-CBC (128/256), HMAC-SHA2-256/384, PRF-SHA2-256/384,
  DH groups 31 (curve25519), 19 (ECP-256) and 14 (MODP-2048); the KE is group 31.

what the answers mean:
  IKE_SA_INIT response (SA, KE, Nonce, ...; chose ...)
                        the responder is reachable, speaks IKEv2 and accepts one of our
                        proposals ("chose" is its pick). If the tunnel still fails, look
                        at authentication (IDs, PSK, certificates) and traffic selectors.
  notify NO_PROPOSAL_CHOSEN
                        reachable, but none of our algorithms matches its configuration.
  notify INVALID_KE_PAYLOAD (wants group N)
                        reachable; it accepts a proposal but wants the key exchange in group N.
  notify COOKIE         reachable; it has many half-open IKE_SAs (strongSwan: 3 from one
                        address, e.g. an earlier 'tracer ike' within 30 s) and asks for a
                        cookie round trip before it spends state. Proposals were not checked:
                        wait half a minute for a full answer (or, on a strongSwan responder
                        you run, drop the probes' half-open SAs, SPIs starting d702:
                        swanctl --terminate --ike-id N --force).
  ...; it signals NAT on its side (or forces UDP encapsulation)
                        its NAT-detection hash does not match its address: a NAT in front of
                        it, or a configuration that forces ESP-in-UDP (strongSwan encap=yes).
  ...; it sees us behind NAT
                        our packets reach it from another address or port than we sent from.
  notify INVALID_SYNTAX / AUTHENTICATION_FAILED / ...
                        reachable; it rejected the request (see its log).
  no answer, requests delivered
                        the responder got them and stayed silent: no IKE daemon on that
                        address/port, no connection configured for our address, too many
                        half-open SAs (strongSwan block_threshold: 5 per address), or its
                        answer was lost on the way back (the reply path says where).
  requests lost on the way
                        something between the gateways drops UDP 500/4500: the verdict names
                        the hop, e.g. "inside router between eth0 and eth1 (forward)".

examples:
  tracer lab up && tracer ike west-gw east-gw
  tracer ike west-gw east-gw --port 4500            # IKE over the NAT-T port
  tracer ike --topology site.toml gw1 203.0.113.7 --count 5 --json

The run directory (pcapng per capture point + manifest with every answer) is kept:
  tracer replay RUN_DIR
"""


class Ike(ProbeType):
    code = ProbeKind.IKE
    name = "ike"
    nouns = ("IKE_SA_INIT requests", "IKE responses")
    help = "is the IKE responder reachable? tagged IKE_SA_INIT probes, traced hop by hop"
    description = (
        "Send tagged IKEv2 IKE_SA_INIT requests from gateway GW_A to gateway GW_B while a "
        "sniffer runs on every capture point between them; report where requests or responses "
        "disappear and what the responder answered. GW_A and GW_B are node names (meaning the "
        "address each uses as its tunnel endpoint in the topology) or addresses. Needs root."
    )
    epilog = EPILOG
    labels = (
        ("src", "GW_A", "initiating gateway: node name or address (the probes leave from it)"),
        ("dst", "GW_B", "responding gateway: node name or address"),
        ("source", "ADDR|IFACE", "address or interface on GW_A to send from (default: GW_A's tunnel endpoint address)"),
    )

    def rows(self, obs: Observations, direction: Direction) -> np.ndarray:
        from tracer.model.direction import Direction
        from tracer.model.observations import PacketClass

        response = (obs["ike_flags"] & FLAG_RESPONSE) != 0
        return (obs["cls"] == PacketClass.IKE) & (response if direction == Direction.REPLY else ~response)

    def spec_fields(self, report: ProbeReport) -> dict[str, object]:
        # What the responder said, as the prober received it ({}: it said nothing).
        return {"answers": report.answers()}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--port", type=int, choices=(500, 4500), default=500,
                            help="responder port: 500 (default), or 4500 with the non-ESP marker, as after NAT detection")

    def check(self, args: argparse.Namespace) -> None:
        if args.count > 0xFFFF:
            # The initiator SPI carries only 16 bits of the probe seq (model/tag.py); seq starts at 1.
            raise BadInput(f"--count {args.count}: tracer ike sends at most 65535 probes per run")

    def prepare(self, topo: Topology, args: argparse.Namespace) -> None:
        gateway_args(topo, args)

    def send(self, ends: Endpoints, run: int, args: argparse.Namespace,
             on_probe: Callable[[SentProbe], None] | None = None) -> ProbeReport:
        from tracer.model.probe import ProbeReport
        from tracer.send.ike import send_probes
        from tracer.send.pacer import Interrupted

        try:
            sent = send_probes(ends.src_node.netns, ends.src, ends.dst, run, args.count, args.interval,
                               args.timeout, port=args.port,
                               on_result=None if on_probe is None else lambda s: on_probe(_sent_probe(s)))
            interrupted = False
        except Interrupted as stop:  # Ctrl-C: report what left, no more
            sent, interrupted = stop.records, True
        return ProbeReport(self.name, args.count, tuple(_sent_probe(s) for s in sent), interrupted,
                           options={"port": args.port, "interval": args.interval})


def _sent_probe(s: Sent) -> SentProbe:
    """The prober's record; what IKE alone has (responder SPI, notifies, NAT) as details."""
    from tracer.model.probe import SentProbe

    d = asdict(s)
    core = {k: d.pop(k) for k in ("seq", "sent_ns", "rtt_ms", "error", "answer")}
    return SentProbe(**core, details=d)


def tunnel_address(topo: Topology, node: str, peer: str | None = None) -> IPv4Address | None:
    """The address ``node`` uses as a tunnel endpoint: of its tunnel to ``peer`` if there is
    one, else of its first tunnel; None if it ends no tunnel."""
    ends = [e for t in topo.tunnels if (e := t.ends_from(node))]
    to_peer = [local for local, remote in ends if remote.node == peer]
    if to_peer:
        return to_peer[0].address
    return ends[0][0].address if ends else None


def gateway_args(topo: Topology, args: argparse.Namespace) -> None:
    """Node names → tunnel endpoint addresses, in place. A gateway's default-route address
    need not be the one its IKE daemon uses, and IKE is only meaningful on that one."""
    src_node, _ = topo.resolve(args.src)
    dst_node, _ = topo.resolve(args.dst)
    if args.dst in topo.nodes and (addr := tunnel_address(topo, dst_node.name, src_node.name)):
        args.dst = str(addr)
    if args.src in topo.nodes and args.source is None and (addr := tunnel_address(topo, src_node.name, dst_node.name)):
        args.source = str(addr)


IKE = register(Ike())
