"""Running a plan: the executor seam (``executor``) and its registry (``registry``), the local and
Ray executors (Ray's ``workers``), the job loop and each job's finish (``run``), and
``--resume`` (``resume``)."""
