"""Core: the pieces every wing uses and that know nothing of adversarial training.

Owns validation errors and atomic file writes (:mod:`.utils`), output paths (:mod:`.paths`), the ``Params``
dataclass convention (:mod:`.params`) and the decorator registries (:mod:`.registry`), the statistics every number
carries (:mod:`.stats`), progress displays (:mod:`.progress`), the provenance record of an evaluation
(:mod:`.provenance`), precision and speed settings (:mod:`.fast`), learning-rate schedules (:mod:`.schedules`),
figures without pyplot (:mod:`.figures`), reading checkpoint files safely (:mod:`.checkpoint_files`,
:mod:`.checkpoint_sniff`) and the processes atkit starts and signals (:mod:`.processes`). Imports nothing of atkit
outside this folder (the version string of the package face aside); every other wing may import it. Nothing is
imported here, so ``import atkit.core.utils`` loads only what it needs.
"""
