"""The shared stream: a source through compression and GPG into a multipart upload, with both
checksums taken on the way (backup), and back (restore)."""
