"""Fitting: what is fitted (``parameters``), how the model is observed (``observation``), the loss terms
(``losses``) and the optimisation (``fitting``)."""
