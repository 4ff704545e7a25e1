"""bridge: the monbridge server process — Flask-SocketIO relay between a device's shared
memory and browsers. Imports device_agent (to read shared memory), never the reverse."""

from device_agent.version import __version__  # one version for the whole package

__all__ = ["__version__"]
