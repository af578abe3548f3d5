"""How much each cached stage's output moves with the CPU thread count (the numeric platform).

    python benchmarks/platform_drift.py [--workdir DIR] [--threads 1 2] [--json PATH]

Runs the demo's jobs (tiny random-weight bundle, generated media, CPU float32) once per thread
count, each into its own feature cache, then compares stage by stage: max |delta| of the
entry's tensors (keypoints, CLIP embedding, VAE latent; pose frames as uint8) and the share of
uint8 values that differ, for the pose frames and for the final video frames. These are the
drifts that ``--cache_platform any`` accepts when it serves one platform's entry to another.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from mimicache.cache.store import FeatureStore
from mimicache.cli.demo import write_demo_config, write_demo_media
from mimicache.config import load_config
from mimicache.engine import MimicMotion
from mimicache.engine.stages import POSE_FRAMES, STAGES, unpack_frames
from mimicache.testing.models import write_tiny_bundle


def _entries(cache: Path) -> dict[str, dict[str, dict[str, torch.Tensor]]]:
    """{stage: {subject-free key fields minus platform: tensors}} of one cache."""
    out: dict[str, dict[str, dict[str, torch.Tensor]]] = {s: {} for s in STAGES}
    for path in cache.rglob("*.safetensors"):
        stage = path.parent.parent.name
        if stage not in out:
            continue
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            fields = json.loads(f.metadata()["fields"])
        fields.pop("platform", None)
        if stage == POSE_FRAMES:  # its params name the keypoint keys, which hold the platform
            fields["params"] = {"code": fields["params"].get("code")}
        out[stage][json.dumps(fields, sort_keys=True)] = load_file(path)
    return out


def _compare(a: dict, b: dict, stage: str) -> dict:
    deltas, changed, total = [], 0, 0
    for name in a:
        if stage == POSE_FRAMES:
            x, y = unpack_frames(a).astype(np.int16), unpack_frames(b).astype(np.int16)
            changed += int((x != y).sum())
            total += x.size
            deltas.append(float(np.abs(x - y).max()))
            break
        x, y = a[name].double(), b[name].double()
        if x.shape == y.shape and x.numel():
            deltas.append(float((x - y).abs().max()))
    row = {"max_abs_delta": max(deltas) if deltas else 0.0}
    if total:
        row["uint8_changed_share"] = changed / total
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("platform-drift"))
    parser.add_argument("--threads", type=int, nargs=2, default=[1, 2])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = args.workdir.absolute()
    bundle = write_tiny_bundle(work / "models")
    image, videos = write_demo_media(work / "media")
    config = load_config(write_demo_config(work / "demo.yaml", bundle, image, videos))
    cases = [c.__class__(**{**c.__dict__, "ref_video_path": str(v)}) for c in config.test_case
             for v in sorted(videos.glob("*.mp4"))]  # fmt: skip
    frames, caches = {}, {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        caches[threads] = work / f"cache-t{threads}"
        engine = MimicMotion.from_config(config, device="cpu")
        engine.cache = FeatureStore(caches[threads], force_refresh=True)
        frames[threads] = [engine.generate(c, progress=False).frames for c in cases]
    a, b = (_entries(caches[t]) for t in args.threads)
    report: dict = {"threads": args.threads, "stages": {}}
    for stage in STAGES:
        rows = [_compare(a[stage][k], b[stage][k], stage) for k in a[stage] if k in b[stage]]
        report["stages"][stage] = {
            "entries": len(rows),
            "max_abs_delta": max((r["max_abs_delta"] for r in rows), default=None),
            **({"uint8_changed_share": float(np.mean([r["uint8_changed_share"] for r in rows]))}
               if rows and "uint8_changed_share" in rows[0] else {}),
        }  # fmt: skip
    video = [(x.astype(np.int16), y.astype(np.int16)) for x, y in zip(*frames.values())]
    report["video"] = {
        "max_abs_delta": int(max(np.abs(x - y).max() for x, y in video)),
        "uint8_changed_share": float(sum((x != y).sum() for x, y in video)
                                     / sum(x.size for x, _ in video)),
    }  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
