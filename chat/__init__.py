"""The chat app: one room per URL path, one Channels group per room."""
