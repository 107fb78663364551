"""The parts of a Lamassu deployment a backup set holds, one package per component.

Each package keeps what is specific to its component: ``spec`` (the resource and runner models),
``plan`` (pure: spec -> runner settings, Secret references, recovery-point objective, artifact
keys), ``backup`` (the runner's backup step) and ``restore`` (the restore runner's hooks).
``registry`` lists them; the shared machinery asks it instead of branching on names. This file
imports nothing, so importing one component's ``spec`` pulls in no other code.
"""
