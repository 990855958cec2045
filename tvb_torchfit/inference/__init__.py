"""Fitting, one module per piece: ``config`` (the settings), ``problem`` (simulator and targets, checked),
``parameters`` (what is fitted: bounds, priors, the unconstrained map), ``observation`` (how the twin is observed),
``estimators`` (the FC at the current values: stochastic twin or linearised network), ``losses`` and ``objective``
(the weighted loss terms), ``loop`` (the optimiser loop and its callbacks), ``checkpoint`` and ``result``;
``fitting.fit`` composes them. The statistics the losses use are ``tvb_torchfit.stats``."""
