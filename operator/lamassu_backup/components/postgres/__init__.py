"""The postgres component (see lamassu_backup.components)."""
