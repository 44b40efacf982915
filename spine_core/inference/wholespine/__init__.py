"""Whole-spine vertebra labelling (C1–L6, T13, sacrum), coarse to fine: an experiment.

Not the shipped model: nothing here is loaded by default. :mod:`.order` (labels in anatomical
order, pure numpy), :mod:`.model` (:class:`WholeSpineLabeller`: coarse network, ordering, fine
network), :mod:`.data` (phantoms of the three regions and training samples) and :mod:`.train`
(training, evaluation per region and ``spine train --stage labelling-whole``). Each module
imports only modules listed before it.
"""

from __future__ import annotations

from spine_core.inference.wholespine.order import CHAIN, order_levels, viterbi_levels

__all__ = ["CHAIN", "order_levels", "viterbi_levels"]
