"""The built-in lab: network namespaces with real strongSwan IPsec gateways.

    from tracer.lab import Lab, FAULTS
    lab = Lab("t1")
    topology = lab.up(fault="esp-blocked")
    ...
    lab.down()
"""

from tracer.lab.faults import FAULTS
from tracer.lab.lab import Lab
from tracer.lab.layout import GATEWAYS, LINKS, NODES, TUNNEL

__all__ = ["FAULTS", "GATEWAYS", "LINKS", "NODES", "TUNNEL", "Lab"]
