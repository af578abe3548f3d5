"""Pose: DWPose (ONNX Runtime or PyTorch backend), alignment to the reference body, drawing."""

from mimicache.pose.align import align_poses
from mimicache.pose.draw import draw_pose, draw_poses
from mimicache.pose.dwpose import DWPose
from mimicache.pose.keypoints import PoseFrame, PoseSequence
from mimicache.pose.preprocess import (
    VideoPoses,
    extract_image_pose,
    extract_video_poses,
    preprocess,
    render_pose_frames,
)
from mimicache.pose.tiny import make_figure_frame, write_tiny_dwpose

__all__ = [
    "DWPose",
    "PoseFrame",
    "PoseSequence",
    "VideoPoses",
    "align_poses",
    "draw_pose",
    "draw_poses",
    "extract_image_pose",
    "extract_video_poses",
    "make_figure_frame",
    "preprocess",
    "render_pose_frames",
    "write_tiny_dwpose",
]
