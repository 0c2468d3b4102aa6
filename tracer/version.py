"""The version of this tracer: a module of its own, so that modules below the package (tracer.columns
writes it in every columns file) can read it without importing the package."""

__version__ = "0.1.0"
