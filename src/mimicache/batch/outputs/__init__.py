"""Where results go: the output root, a folder or an object-storage URL (``root``); a job's mp4 and
sidecar published create-only under a free name (``publish``); results a refusing store left on
this machine, published by ``--resume`` (``kept``)."""
