"""The Socket.IO client manager of a cluster node: Redis fan-out between nodes, bounded
queues on each node.

python-socketio's ``AsyncRedisManager`` publishes every emit on a Redis channel and
each node delivers it to its own connections; delivery on a node goes through
:class:`~server.fanout.FanoutManager` (one encode per broadcast, bounded send
queues), which sits after the pub/sub manager in the method resolution order.
"""

from __future__ import annotations

import socketio

from ..fanout import FanoutManager

SOCKETIO_CHANNEL = "roomrelay:socketio"


class RedisFanoutManager(socketio.AsyncRedisManager, FanoutManager):
    """``AsyncRedisManager`` whose local deliveries are :class:`FanoutManager`'s."""

    def __init__(self, url: str, max_queued: int) -> None:
        socketio.AsyncRedisManager.__init__(self, url, channel=SOCKETIO_CHANNEL)
        self.max_queued = max_queued

    async def leave_room(self, sid: str, namespace: str, room: str) -> None:
        """Leave on this node when the connection is here, even while it disconnects (the
        pub/sub manager would only ask the other nodes then, and the room's count would
        include the leaver until the disconnect completes)."""
        if sid in self.rooms.get(namespace, {}).get(room, {}):
            await socketio.AsyncManager.leave_room(self, sid, namespace, room)
        else:
            await super().leave_room(sid, namespace, room)


def client_manager(redis_url: str, max_queued: int) -> FanoutManager:
    """The in-memory manager, or the Redis one when the node is part of a cluster."""
    if redis_url:
        return RedisFanoutManager(redis_url, max_queued)
    return FanoutManager(max_queued)
