"""Evidence sources: what the network itself says, read during a live trace and stored in the
run directory beside the captures (the packets say what happened; evidence says why).

One module per source, each with the same shape: read one node (in its local network
namespace, or over SSH), return model data (``tracer.model``) or a reason why it could not,
never a traceback. ``netstate``: live addresses, links, routes and policy rules.
"""
