"""bridge: the monbridge server process — Flask-SocketIO relay between a device's shared
memory and browsers. Imports device_agent (to read shared memory), never the reverse."""

__version__ = "0.1.0"
