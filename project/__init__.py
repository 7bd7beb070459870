"""Sample Django project: websocket chat and request statistics on streams_layer."""
