"""Media workers: the relay's rooms spread over several processes of one machine.

The Socket.IO front (the main process) keeps every client; each room's media
(the SFU and the server-side audio) lives in exactly one worker process, which
browsers reach directly over UDP. The front and a worker talk over a local
socket pair (:mod:`.wire`): commands go down, :class:`MediaListener` facts and
audio results come back up.
"""
