"""The backup path: the run skeleton (:mod:`.run`: stream each component's artifacts, record
its outcome, commit the set) and the lookup of each component's backup step (:mod:`.steps`)."""
