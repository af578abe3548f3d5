"""Scores of a finished clip against the pose it was asked for, its identity and flicker.

``metrics`` holds the measures on plain arrays (keypoints, embeddings, frames), so other
tools and tests can call them without a clip.
"""
