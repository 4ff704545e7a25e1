"""The version of monbridge, written once: the package metadata (pyproject.toml), `monbridge
--version` and both packages read it from here. Imports nothing."""

__version__ = "0.2.0"
