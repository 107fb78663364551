"""The volumes component (see lamassu_backup.components)."""
