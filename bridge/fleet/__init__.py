"""Bridges on several machines (issue 15 §2): an origin beside the device publishes into
Redis Streams, edges anywhere read them and serve browsers with the same relay.

``bridge.fleet.streams`` is the layout — keys, entry fields, retention, the edge's gap
arithmetic — without I/O; it is documented in docs/scaling.md ("What goes into Redis").
The modules that talk to Redis (the origin's publisher, the edge's follower) are the only
ones in the project that may import ``redis``; nothing outside ``bridge/fleet`` imports this
package at module level (server.py imports its modules inside the functions that serve an
origin or an edge), so ``import bridge`` works without redis-py installed (``pip install
"monbridge[fleet]"`` brings it).

This file imports nothing: importing the package must stay free of redis, flask and socketio.
"""
