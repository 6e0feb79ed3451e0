"""Helpers shared by the test suite: a real server process and real Socket.IO clients."""
