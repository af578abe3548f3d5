"""The names of the cached stages and the timed steps, with their report colours; no torch.

``engine.stages`` declares each stage's key recipe and codec under these names; the cache
commands, reports and charts read only the names, so they start without loading the models'
libraries.
"""

from __future__ import annotations

__all__ = [
    "CLIP_EMBEDDINGS",
    "IMAGE_KEYPOINTS",
    "JOB_STAGES",
    "JOB_STEPS",
    "OUTPUT_EMBEDDINGS",
    "OUTPUT_KEYPOINTS",
    "PIPELINE_STAGES",
    "POSE_FRAMES",
    "POSE_STAGES",
    "SCORE_STAGES",
    "STAGES",
    "STAGE_COLORS",
    "STEP_COLORS",
    "TOTALS",
    "UNCACHED_STEPS",
    "VAE_LATENTS",
    "VIDEO_KEYPOINTS",
]

VIDEO_KEYPOINTS = "video_keypoints"
IMAGE_KEYPOINTS = "image_keypoints"
POSE_FRAMES = "pose_frames"
CLIP_EMBEDDINGS = "clip_embeddings"
VAE_LATENTS = "vae_latents"
OUTPUT_KEYPOINTS = "output_keypoints"  # DWPose on a finished clip's scored frames
OUTPUT_EMBEDDINGS = "output_embeddings"  # CLIP of them
POSE_STAGES = (VIDEO_KEYPOINTS, IMAGE_KEYPOINTS, POSE_FRAMES)
PIPELINE_STAGES = (CLIP_EMBEDDINGS, VAE_LATENTS)
JOB_STAGES = POSE_STAGES + PIPELINE_STAGES  # keyed by a job's inputs (``stages.JobKeys``)
SCORE_STAGES = (OUTPUT_KEYPOINTS, OUTPUT_EMBEDDINGS)  # keyed by a finished clip's frames
STAGES = JOB_STAGES + SCORE_STAGES

# Report colours: Okabe-Ito's colour-blind-safe hues (and lighter tints of them), one family
# per kind of work (pose: blues; the reference's features: orange and yellow; the scores'
# stages: purples), the big uncached steps in hues of their own, bookkeeping in greys.
STAGE_COLORS = {
    VIDEO_KEYPOINTS: "#0072B2",
    IMAGE_KEYPOINTS: "#56B4E9",
    POSE_FRAMES: "#A6D8F2",
    CLIP_EMBEDDINGS: "#E69F00",
    VAE_LATENTS: "#F0E442",
    OUTPUT_KEYPOINTS: "#CC79A7",
    OUTPUT_EMBEDDINGS: "#E9C1D8",
}
# Timed steps the cache does not touch, in run order (their cold/warm differences are
# run-to-run noise), then the steps timed around a job, with their colours in reports.
UNCACHED_STEPS = {
    "digest": "#C8C8C8",
    "unpack": "#A0A0A0",
    "pose_net": "#D55E00",
    "denoise": "#009E73",
    "decode": "#3A3A3A",
    "score": "#882255",  # the clip scores' measures (their DWPose and CLIP are cached stages)
}
JOB_STEPS = {"write": "#707070", "preview": "#AA4499"}
# The original scripts' three totals: sums of the steps above, so they get no bar segment of their own.
TOTALS = ("preprocess", "pipeline", "total")
STEP_COLORS = {**STAGE_COLORS, **UNCACHED_STEPS, **JOB_STEPS}
