"""The built-in lab: network namespaces with real strongSwan IPsec gateways.

    from tracer.lab import Lab, FAULTS
    lab = Lab("t1")
    path = lab.up(fault="esp-blocked")  # its topology.toml; lab.topology() is the Topology itself
    ...
    lab.down()
"""

from tracer.lab.faults import FAULTS
from tracer.lab.lab import Lab
from tracer.lab.layout import GATEWAYS, LINKS, NODES, TUNNEL

__all__ = ["FAULTS", "GATEWAYS", "LINKS", "NODES", "TUNNEL", "Lab"]
