"""Build script: the metadata is in setup.cfg; this adds the compiled extractor and pcapng walk.

``optional=True``: without a C compiler or Python's headers the install still succeeds and
tracer extracts with numpy alone (same columns, ~2x slower; ``tracer version`` says which)."""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("tracer.analysis._extract", ["tracer/analysis/_extract.c"], optional=True),
    Extension("tracer.capture._walk", ["tracer/capture/_walk.c"], optional=True),
])
