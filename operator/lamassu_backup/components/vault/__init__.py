"""The vault component (see lamassu_backup.components)."""
