"""Figures of merit, one definition each: :mod:`.classification` (accuracy, F1, AUC with DeLong CI, sensitivity,
specificity, PPV, NPV, Youden threshold, bootstrap CIs), :mod:`.segmentation` (Dice, HD95), :mod:`.registration`
(warped-label Dice, landmark error, Jacobian figures) and :mod:`.saliency` (pointing game, deletion curve).
Import the submodule you need; this package imports nothing heavy so that ``cspineai.metrics.classification`` stays
cheap.
"""
