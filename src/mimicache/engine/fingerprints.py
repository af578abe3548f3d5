"""Model fingerprints for the cache keys: digests of the weight and config files a stage's
result depends on (plus DWPose's settings and execution providers), hex strings; and the
model files as the sidecars name them."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

from mimicache.cache import FeatureStore, fingerprint_files

if TYPE_CHECKING:
    from pathlib import Path

    from mimicache.pipeline import BaseModelFiles
    from mimicache.pose import DWPose


class ModelFingerprints:
    """One fingerprint per model that feeds a cached stage, each computed once (the digest
    memo makes a later process's first look-up cheap too)."""

    def __init__(
        self,
        dwpose: DWPose,
        base_files: BaseModelFiles,
        store: Callable[[], FeatureStore | None] = lambda: None,
    ):
        self._dwpose = dwpose
        self._base = base_files
        self._store = store  # the engine's current cache (it may be swapped), for its memo

    def _fingerprint(self, paths: dict, extra: dict | None = None) -> str:
        store = self._store()
        if store is None:
            return fingerprint_files(paths, extra=extra)
        return store.fingerprint(paths, extra=extra)

    @cached_property
    def dwpose(self) -> str:
        """Both ONNX files, the pre/post-processing settings and the execution providers."""
        return self._fingerprint(
            {"det": self._dwpose.det_model_path, "pose": self._dwpose.pose_model_path},
            extra={"settings": self._dwpose.settings, "providers": self._dwpose.providers},
        )

    @cached_property
    def image_encoder(self) -> str:
        """CLIP weights and config, and the preprocessor config that prepares its input."""
        root = self._base.root
        return self._fingerprint(
            {
                "weights": self._base.image_encoder_weights,
                "config": root / "image_encoder" / "config.json",
                "preprocessor": root / "feature_extractor" / "preprocessor_config.json",
            }
        )

    @cached_property
    def vae(self) -> str:
        return self._fingerprint(
            {"weights": self._base.vae_weights, "config": self._base.root / "vae" / "config.json"}
        )

    def forget(self) -> None:
        """Drop the computed fingerprints (they are computed again on next use)."""
        for name in ("dwpose", "image_encoder", "vae"):
            self.__dict__.pop(name, None)


def model_files(
    dwpose: DWPose, base_files: BaseModelFiles | None, ckpt_path: Path
) -> dict[str, str]:
    """The model files an engine reads, as its sidecars name them (DWPose alone when no
    base model was loaded)."""
    dwpose_files = {
        "dwpose_det": str(dwpose.det_model_path),
        "dwpose_pose": str(dwpose.pose_model_path),
    }
    if base_files is None:
        return dwpose_files
    return {
        "base_model": str(base_files.root),
        "checkpoint": str(ckpt_path),
        "vae": base_files.vae_weights.name,
        "image_encoder": base_files.image_encoder_weights.name,
        **dwpose_files,
    }
