"""Config-file runs (``tvb-torchfit fit run.toml``): ``config`` (the schema, ``defaults.toml`` merged, ``--set``),
``checks`` (what the schema cannot see), ``inputs`` (data, split, maps, the TVB simulator), ``pipeline`` (staged
fits, TVB validation, the report) and ``folder`` (the run folder's files, ``load_fitted_simulator``).

Only ``folder`` is imported here, so that ``import tvb_torchfit`` does not import pydantic."""
