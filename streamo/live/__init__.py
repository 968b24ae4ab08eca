"""The live layer: many concurrent streaming sessions behind a WebSocket API (``streamo serve``),
its client (``streamo client``) and the web page.

Data flows one way: socket -> ``messages`` (pydantic, both directions) -> ``scheduler`` (many
sessions, one model, one thread) -> the engine's ``StreamingSession`` -> event -> socket. The
server module holds no tensor and the scheduler no HTTP.
"""
