"""The jobs of a run: test cases x driving videos (``plan``) or a manifest's rows (``manifest``),
their planned output names, and inputs given by URL fetched where a job runs (``inputs``)."""
