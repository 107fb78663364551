"""The restore path: the verify-then-swap skeleton (:mod:`.run`), the set reader
(:mod:`.set_reader`: manifest, signature, selection), the lookup of each component's restore
hooks (:mod:`.hooks`) and the key consistency comparison across components (:mod:`.keys`)."""
