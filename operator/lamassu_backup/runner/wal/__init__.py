"""The WAL runners: the shipper and base backups (point-in-time recovery)."""
