"""What a server keeps: the policy store (SQLite or PostgreSQL) and the live policy it follows, API
keys and rate limits, the audit log."""
