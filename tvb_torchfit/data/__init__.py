"""Empirical data: ``subject`` (the ``Subject`` a fit takes), loaders for HCP and user files (``datasets``) and
preprocessing (``preprocessing``); ``datasets`` imports ``preprocessing``, both import ``subject``."""
