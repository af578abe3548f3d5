"""Pose: DWPose (ONNX Runtime or PyTorch backend), the choice of one person, alignment to the
reference body, optional graft retargeting, confidence-aware drawing."""

from mimicache.pose.align import align_poses
from mimicache.pose.draw import draw_pose, draw_poses
from mimicache.pose.dwpose import DWPose
from mimicache.pose.keypoints import PoseFrame, PoseSequence
from mimicache.pose.people import PeopleReport, choose_person, track_people
from mimicache.pose.preprocess import (
    VideoPoses,
    extract_image_pose,
    extract_video_poses,
    preprocess,
    render_pose_frames,
    select_person,
)
from mimicache.pose.retarget import RETARGET_MODES, graft_pose, retarget_poses

__all__ = [
    "RETARGET_MODES",
    "DWPose",
    "PeopleReport",
    "PoseFrame",
    "PoseSequence",
    "VideoPoses",
    "align_poses",
    "choose_person",
    "draw_pose",
    "draw_poses",
    "extract_image_pose",
    "extract_video_poses",
    "graft_pose",
    "preprocess",
    "render_pose_frames",
    "retarget_poses",
    "select_person",
    "track_people",
]
