"""Tiles of a video and the UNet passes over them: frame indices per tile (every tile holds frame
0, the reference), blending weights (T,), and one UNet call for a group of passes, each a
(1,T,8,h,w) latent input giving a (1,T,4,h,w) prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def tile_indices(num_frames: int, tile_size: int, tile_overlap: int) -> list[list[int]]:
    """Frame indices of each tile; every tile holds frame 0 (the reference).

    Fewer frames than the tile size make one tile of all frames.
    """
    if num_frames <= tile_size:
        return [list(range(num_frames))]
    if not 0 <= tile_overlap < tile_size:
        raise ValueError(f"tile_overlap must be in [0, {tile_size}), got {tile_overlap}")
    stride = tile_size - tile_overlap
    tiles = [
        [0, *range(start + 1, min(start + tile_size, num_frames))]
        for start in range(0, num_frames - tile_size + 1, stride)
    ]
    if tiles[-1][-1] < num_frames - 1:
        tiles.append([0, *range(num_frames - tile_size + 1, num_frames)])
    return tiles


def tile_weights(tile_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Triangular blending weights (T,): min((p+0.5)·2/T, 2-(p+0.5)·2/T)."""
    weight = (torch.arange(tile_size, device=device) + 0.5) * 2.0 / tile_size
    return torch.minimum(weight, 2 - weight)


@dataclass(frozen=True)
class UNetPass:
    """One UNet sample of a step: a tile's frames, conditional or unconditional."""

    frames: list[int]
    conditional: bool


def tile_passes(tiles: list[list[int]], guided: bool) -> list[UNetPass]:
    """A step's passes in the published order: per tile, unconditional (when guided) first."""
    return [UNetPass(idx, cond) for idx in tiles for cond in ([False, True] if guided else [True])]


def batched(items: list, size: int) -> list[list]:
    """Consecutive groups of at most ``size`` items, in order."""
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


def unet_passes(
    unet,
    group: list[UNetPass],
    t: torch.Tensor,
    *,
    inputs: tuple[torch.Tensor | None, torch.Tensor],
    embeddings: tuple[torch.Tensor | None, torch.Tensor],
    pose_latents: torch.Tensor,
    added_time_ids: torch.Tensor,
    zero_pose: bool,
) -> list[torch.Tensor]:
    """One UNet call for a group of passes; one (1,T,4,h,w) prediction per pass.

    ``inputs`` and ``embeddings`` are (unconditional, conditional). An unconditional pass
    has no pose latents; zeros added after conv_in are the same, so a mixed batch (or
    ``zero_pose``, which keeps one compiled graph) uses zeros for it.
    """
    samples = torch.cat([inputs[p.conditional][:, p.frames] for p in group])
    context = torch.cat([embeddings[p.conditional] for p in group])
    if len(group) == 1 and not group[0].conditional and not zero_pose:
        pose = None
    else:
        pose = torch.cat(
            [
                pose_latents[p.frames]
                if p.conditional
                else pose_latents.new_zeros((len(p.frames), *pose_latents.shape[1:]))
                for p in group
            ]
        )
    pred = unet(
        samples,
        t,
        encoder_hidden_states=context,
        added_time_ids=added_time_ids.repeat(len(group), 1),
        pose_latents=pose,
        return_dict=False,
    )[0]
    return list(pred.split(1))
