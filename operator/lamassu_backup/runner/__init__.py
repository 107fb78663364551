"""The code a backup, verification or restore Job runs inside its container."""
