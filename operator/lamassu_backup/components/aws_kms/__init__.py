"""The aws_kms component (see lamassu_backup.components)."""
