"""Many roomrelay nodes as one cluster, through Redis (``REDIS_URL``).

python-socketio's ``AsyncRedisManager`` carries emits across nodes (manager.py);
the nodes' heartbeats, their participants and which node owns each room's media
live in Redis with expiries (node.py, members.py); media commands go to the
room's owning node and its facts come back to the participant's node over a
pub/sub channel per node (bus.py, media.py).
"""
