"""Empirical data: loaders for HCP and user files (``datasets``) and preprocessing (``preprocessing``)."""
