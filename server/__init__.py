"""roomrelay: a Socket.IO-compatible WebRTC room server built on aiohttp and aiortc."""

__version__ = "0.1.0"
