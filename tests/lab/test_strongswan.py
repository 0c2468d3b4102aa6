"""strongSwan glue: swanctl's raw output, charon's key log, the gateways' configurations (no root needed)."""

from __future__ import annotations

from tracer.lab import layout, strongswan
from tracer.swanctl_raw import parse_raw


def test_parse_swanctl_raw() -> None:
    raw = (
        "list-sa event {west-east {uniqueid=1 state=ESTABLISHED initiator=yes child-sas "
        "{west-east-1 {name=west-east state=INSTALLED spi-in=c1 spi-out=c2 local-ts=[192.0.2.0/24 10.0.0.0/8]}}}}"
    )
    parsed = parse_raw(raw[raw.index("{") :])
    child = parsed["west-east"]["child-sas"]["west-east-1"]
    assert child["spi-in"] == "c1" and child["local-ts"] == ["192.0.2.0/24", "10.0.0.0/8"]
    assert strongswan.child_installed([{"name": "west-east", **parsed["west-east"]}], "west-east")


def test_child_sa_keys_from_log() -> None:
    log = "\n".join(
        [
            "07[CHD] encryption initiator key => 20 bytes @ 0x7f",
            "07[CHD]    0: 00 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F  ................",
            "09[IKE] unrelated line of another thread",
            "07[CHD]   16: 10 11 12 13                                      ....",
            "07[CHD] encryption responder key => 20 bytes @ 0x7f",
            "07[CHD]    0: FF FF FF FF FF FF FF FF FF FF FF FF FF FF FF FF  ................",
            "07[CHD]   16: FF FF FF FF                                      ....",
            "07[CHD] adding inbound ESP SA",
            "07[IKE] CHILD_SA west-east{3} established with SPIs c1a2b3c4_i 0d0e0f10_o and TS 192.0.2.0/24 === x",
        ]
    )
    (keys,) = strongswan.child_sa_keys(log)
    assert keys.unique_id == 3 and keys.spi_in == 0xC1A2B3C4 and keys.spi_out == 0x0D0E0F10
    assert keys.encr_initiator == bytes(range(20)) and keys.encr_responder == b"\xff" * 20
    assert "00 01" not in repr(keys) and "000102" not in repr(keys)


def test_gateway_configs_mirror_each_other() -> None:
    configs = strongswan.gateway_configs(layout.TUNNEL, "00" * 32)
    west, east = configs["west-gw"], configs["east-gw"]
    assert (west.local, west.remote, west.local_ts, west.remote_ts) == (
        "198.18.1.1", "198.18.2.1", ("192.0.2.0/24",), ("198.51.100.0/24",))
    assert (east.local, east.remote, east.local_ts, east.remote_ts) == (
        west.remote, west.local, west.remote_ts, west.local_ts)
    assert west.conn == east.conn == "west-east"
