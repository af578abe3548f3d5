"""Does encoding the same uint8 frames give the same mp4 every time?

Encodes one fixed clip ``--repeats`` times with ``mimicache.media.encode_video`` and prints how
many distinct bitstreams came out and how far their decoded frames are from the first one's.
Run it in several processes too: a difference seen here is in the encoder, not the engine.

    python benchmarks/encode_determinism.py --width 576 --height 1024 --frames 12 --repeats 12
"""

from __future__ import annotations

import argparse
import hashlib
import io

import av
import numpy as np

from mimicache.media import encode_video


def clip(width: int, height: int, frames: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [
            np.stack([(x + 7 * i) % 256, (y + 3 * i) % 256, ((x * y) >> 6) % 256], -1)
            for i in range(frames)
        ]
    ).astype(np.uint8)


def decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=576)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args()
    frames = clip(args.width, args.height, args.frames)
    encoded = [encode_video(frames, 8) for _ in range(args.repeats)]
    first = decode(encoded[0]).astype(int)
    worst = max(int(np.abs(decode(d) - first).max()) for d in encoded)
    digests = [hashlib.blake2b(d, digest_size=6).hexdigest() for d in encoded]
    print(
        f"{args.width}x{args.height}x{args.frames}: {len(set(digests))} distinct bitstreams "
        f"in {args.repeats} encodes; max |decoded - first| = {worst} levels"
    )
    print(" ".join(digests))


if __name__ == "__main__":
    main()
