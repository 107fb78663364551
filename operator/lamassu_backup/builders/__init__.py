"""Pure builders: CRDs, Job manifests, schedules, retention, staleness. No I/O."""
