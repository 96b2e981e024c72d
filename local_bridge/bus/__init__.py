"""The WebSocket bus: hub, outboxes, transports and the connection protocol."""
