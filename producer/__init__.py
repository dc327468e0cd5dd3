"""Producer side: read the user's corpus and queue its documents for extraction."""
