"""Lateral spine radiographs: a VertXNet-style ensemble of a 2-D MONAI U-Net (vertebra masks) and a
centre-heatmap instance detector (per-vertebra boxes and the reference vertebra), with labels
counted from the reference: C2 up and down on cervical films, S1 upward on lumbar films.

Modules, one job each: :mod:`.config` (settings and network specs), :mod:`.grid` (film to model
grid, training targets), :mod:`.counting` (labels from the reference), :mod:`.decode` (network
outputs to instances, the ensemble rule), :mod:`.model` (load and predict), :mod:`.evaluate`
(Dice and labelling accuracy), :mod:`.card`, :mod:`.train` (``spine train --modality xray``).
"""
