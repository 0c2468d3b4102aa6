"""Run directories, the contract between recording and analysis.

A live trace records one (:mod:`tracer.run.record`: a pcapng per capture point, the
manifest, the probe report, the topology), then hands it to :mod:`tracer.run.replay`,
the same code ``tracer replay`` runs on any directory or set of capture files.
"""
