"""Point-in-time recovery of the postgres component: WAL shipping and its facts, base backups,
the recovery into a scratch server, and bringing it into the live one through the swap."""
