"""Build script: the metadata is in setup.cfg; this adds the compiled extractor and pcapng walk.

Optional: without a C compiler or Python's headers the install still succeeds and tracer
extracts with numpy alone (the same columns, slower; ``tracer --version`` says which).
``TRACER_BUILD_REQUIRED=1`` (CI sets it) makes a failed build fail the install instead, so a
C file that no longer compiles cannot hide behind an older build or the numpy fallback."""

import os

from setuptools import Extension, setup

optional = os.environ.get("TRACER_BUILD_REQUIRED") != "1"
setup(ext_modules=[
    Extension("tracer.analysis._extract", ["tracer/analysis/_extract.c"], optional=optional),
    Extension("tracer.capture._walk", ["tracer/capture/_walk.c"], optional=optional),
])
