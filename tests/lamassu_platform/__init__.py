"""The local platform the tests and the local run use: a real control plane, a pod runner, and
real services (PostgreSQL, an S3 server, OpenBao, GnuPG) on loopback.

Nothing here is shipped with the operator: it stands in for the cluster and the services a
Lamassu deployment runs next to, so the operator is tested against the real thing.
"""
