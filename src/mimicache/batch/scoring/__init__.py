"""Scoring clips that exist (``mimicache score``) over the clips an output root holds
(``outputs.clips``): which need work and ``scores.jsonl`` (``scores``), one clip scored
(``scorer``), and many of them here or on Ray workers (``runner``)."""
