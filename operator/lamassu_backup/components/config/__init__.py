"""The config component (see lamassu_backup.components)."""
