"""Analyses computed from the model rather than by stepping it, as ``tvb.analyzers``: the Balloon-Windkessel
BOLD model (``balloon``), the linearised analytic FC (``linear``), feedback inhibition control (``fic``) and the
local bifurcation analysis (``bifurcation``)."""
