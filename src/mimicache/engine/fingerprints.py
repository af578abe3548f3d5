"""Model fingerprints for the cache keys: digests of the weight and config files a stage's
result depends on (plus DWPose's settings and execution providers). Hex strings."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

from mimicache.cache.keys import DigestMemo, fingerprint_files

if TYPE_CHECKING:
    from mimicache.pipeline import BaseModelFiles
    from mimicache.pose import DWPose


class ModelFingerprints:
    """One fingerprint per model that feeds a cached stage, each computed once (the digest
    memo makes a later process's first look-up cheap too)."""

    def __init__(
        self,
        dwpose: DWPose,
        base_files: BaseModelFiles,
        memo: Callable[[], DigestMemo | None] = lambda: None,
    ):
        self._dwpose = dwpose
        self._base = base_files
        self._memo_of = memo  # the current cache's digest memo (the cache may be swapped)

    @property
    def _memo(self) -> DigestMemo | None:
        return self._memo_of()

    @cached_property
    def dwpose(self) -> str:
        """Both ONNX files, the pre/post-processing settings and the execution providers."""
        return fingerprint_files(
            {"det": self._dwpose.det_model_path, "pose": self._dwpose.pose_model_path},
            extra={"settings": self._dwpose.settings, "providers": self._dwpose.providers},
            memo=self._memo,
        )

    @cached_property
    def image_encoder(self) -> str:
        """CLIP weights and config, and the preprocessor config that prepares its input."""
        root = self._base.root
        return fingerprint_files(
            {
                "weights": self._base.image_encoder_weights,
                "config": root / "image_encoder" / "config.json",
                "preprocessor": root / "feature_extractor" / "preprocessor_config.json",
            },
            memo=self._memo,
        )

    @cached_property
    def vae(self) -> str:
        return fingerprint_files(
            {"weights": self._base.vae_weights, "config": self._base.root / "vae" / "config.json"},
            memo=self._memo,
        )

    def forget(self) -> None:
        """Drop the computed fingerprints (they are computed again on next use)."""
        for name in ("dwpose", "image_encoder", "vae"):
            self.__dict__.pop(name, None)
