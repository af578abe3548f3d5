"""What a run tells: JSON sidecars and the summary table (``report``), the self-contained
``report.html`` (``html``), ``results.jsonl`` at the output root (``results``)."""
