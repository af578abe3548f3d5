"""A Hugging Face Hub on localhost, for the download and hub-reference tests.

It answers the requests huggingface_hub 2.x makes, the way the hub answers them:

- ``GET /api/models/{repo}[/revision/{rev}]`` (``?blobs=true`` adds sizes and hashes): the
  commit (``sha``), ``gated``, and ``siblings`` with ``size``, ``blobId`` (git blob id) and, for
  LFS files, ``lfs`` (``sha256``, ``size``, ``pointerSize``).
- ``GET /api/models/{repo}/tree/{rev}[/{path}]``: the files (``snapshot_download`` lists
  them so), each with ``oid``, ``size`` and ``lfs`` (``oid`` the sha256), in one page.
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: a regular file answers 200 with its git blob
  id as ``ETag``, ``Content-Length`` and ``X-Repo-Commit``; an LFS file answers 302 to the CDN
  (a second server: another origin, as the hub's CDN is, so the client keeps the metadata of
  the redirect) with ``X-Linked-Etag`` (the sha256), ``X-Linked-Size`` and ``X-Repo-Commit``.
  Errors carry the hub's ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound,
  GatedRepo: 401 without a token, 403 with a token that was not granted access).
- CDN ``GET /{sha256}`` (with ``Range``). ``corrupt`` names files whose CDN bytes are altered
  (same length, other sha256), as a broken mirror would serve them.

``requests`` records every (server, method, path) so tests count what was fetched; the
library's own once-a-day fetch of ``/api/agent-harnesses`` (the registry its user agent is
built from) is answered as the hub answers it and kept apart, in ``telemetry``.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".onnx", ".pth", ".bin")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    sha = hashlib.sha256(data).hexdigest()
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
    )


@dataclass
class Repo:
    """A model repository at one commit: its files (path -> bytes) and whether it is gated."""

    repo_id: str
    files: dict[str, bytes]
    gated: bool = False
    commit: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.repo_id.encode())
        for name in sorted(self.files):
            digest.update(name.encode() + hashlib.sha256(self.files[name]).digest())
        self.commit = digest.hexdigest()

    @staticmethod
    def is_lfs(name: str) -> bool:
        return name.endswith(LFS_SUFFIXES)

    def sibling(self, name: str, blobs: bool) -> dict:
        if not blobs:
            return {"rfilename": name}
        data = self.files[name]
        if not self.is_lfs(name):
            return {"rfilename": name, "size": len(data), "blobId": git_blob_id(data)}
        pointer = lfs_pointer(data)
        lfs = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "pointerSize": len(pointer),
        }
        return {"rfilename": name, "size": len(data), "blobId": git_blob_id(pointer), "lfs": lfs}


class FakeHub:
    """The hub (``endpoint``) and its CDN on two localhost ports; ``token``: what a gated
    repository accepts."""

    def __init__(self, repos: list[Repo], token: str = "hf_test_token"):
        self.repos = {r.repo_id: r for r in repos}
        self.token = token
        self.corrupt: set[str] = set()
        self.requests: list[tuple[str, str, str]] = []
        self.telemetry: list[str] = []
        self._blobs = {
            hashlib.sha256(data).hexdigest(): (name, data)
            for repo in repos
            for name, data in repo.files.items()
            if Repo.is_lfs(name)
        }
        self.hub = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "hub"))
        self.cdn = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "cdn"))
        self._threads = [
            threading.Thread(target=s.serve_forever, daemon=True) for s in (self.hub, self.cdn)
        ]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self.cdn.server_address[1]}"

    def start(self) -> FakeHub:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in (self.hub, self.cdn):
            server.shutdown()
            server.server_close()

    def count(self, server: str | None = None, method: str | None = None, prefix: str = "") -> int:
        """How many recorded requests match."""
        return sum(
            (server is None or s == server) and (method is None or m == method)
            and p.startswith(prefix)
            for s, m, p in self.requests
        )  # fmt: skip

    def downloads(self) -> list[str]:
        """The files whose bytes were sent (regular files from the hub, LFS files from the CDN)."""
        out = []
        for server, method, path in self.requests:
            if method != "GET":
                continue
            if server == "cdn":
                out.append(self._blobs[path.lstrip("/")][0])
            elif "/resolve/" in path:
                out.append(path.split("/resolve/", 1)[1].split("/", 1)[1])
        return out


def _handler(hub: FakeHub, role: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: pytest shows failures, not traffic
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            url = urlsplit(self.path)
            if url.path == "/api/agent-harnesses":
                hub.telemetry.append(url.path)
                data = json.dumps({"standardEnvVars": [], "harnesses": {}}).encode()
                self._send(200, {"Content-Type": "application/json"}, data, body)
                return
            hub.requests.append((role, self.command, url.path))
            if role == "cdn":
                self._cdn(url.path.lstrip("/"), body)
            elif url.path.startswith("/api/models/"):
                self._info(url.path[len("/api/models/") :], parse_qs(url.query), body)
            elif "/resolve/" in url.path:
                self._resolve(url.path.lstrip("/"), body)
            else:
                self._send(404, {"X-Error-Code": "RepoNotFound"}, b"{}", body)

        def _send(self, status: int, headers: dict, data: bytes, body: bool) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _error(self, status: int, code: str, message: str, body: bool, commit=None):
            headers = {"X-Error-Code": code, "X-Error-Message": message}
            if commit:
                headers["X-Repo-Commit"] = commit
            data = json.dumps({"error": message}).encode()
            self._send(status, {**headers, "Content-Type": "application/json"}, data, body)

        def _repo(self, owner: str, name: str, body: bool) -> Repo | None:
            repo = hub.repos.get(f"{owner}/{name}")
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found", body)
            return repo

        def _info(self, rest: str, query: dict, body: bool) -> None:
            parts = rest.split("/")
            repo = self._repo(parts[0], parts[1] if len(parts) > 1 else "", body)
            if repo is None:
                return
            if len(parts) > 3 and unquote(parts[3]) not in ("main", repo.commit):
                self._error(404, "RevisionNotFound", "Invalid rev id", body)
                return
            if len(parts) > 3 and parts[2] == "tree":
                self._tree(repo, "/".join(parts[4:]), body)
                return
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            info = {
                "_id": repo.commit[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": repo.commit,
                "private": False,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "siblings": [repo.sibling(n, blobs) for n in sorted(repo.files)],
            }
            data = json.dumps(info).encode()
            self._send(200, {"Content-Type": "application/json"}, data, body)

        def _tree(self, repo: Repo, folder: str, body: bool) -> None:
            """Every file under ``folder``, recursively, in one page (no Link header)."""
            entries = []
            for name in sorted(repo.files):
                if folder and not name.startswith(folder.rstrip("/") + "/"):
                    continue
                sibling = repo.sibling(name, blobs=True)
                entry = {"type": "file", "oid": sibling["blobId"], "size": sibling["size"]}
                if "lfs" in sibling:
                    lfs = sibling["lfs"]
                    entry["lfs"] = {
                        "oid": lfs["sha256"],
                        "size": lfs["size"],
                        "pointerSize": lfs["pointerSize"],
                    }
                entries.append({**entry, "path": name})
            data = json.dumps(entries).encode()
            self._send(200, {"Content-Type": "application/json"}, data, body)

        def _resolve(self, path: str, body: bool) -> None:
            head, _, tail = path.partition("/resolve/")
            owner, _, name = head.partition("/")
            repo = self._repo(owner, name, body)
            if repo is None:
                return
            revision, _, filename = tail.partition("/")
            revision, filename = unquote(revision), unquote(filename)
            if repo.gated and self.headers.get("Authorization") != f"Bearer {hub.token}":
                # the hub's words: 401 when not logged in, 403 when not on the authorized list
                status = 403 if self.headers.get("Authorization") else 401
                message = f"Access to model {repo.repo_id} is restricted."
                self._error(status, "GatedRepo", message, body)
                return
            if revision not in ("main", repo.commit):
                self._error(404, "RevisionNotFound", "Invalid rev id", body)
                return
            data = repo.files.get(filename)
            if data is None:
                self._error(404, "EntryNotFound", "Entry not found", body, repo.commit)
                return
            headers = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
            if Repo.is_lfs(filename):
                sha = hashlib.sha256(data).hexdigest()
                headers |= {
                    "Location": f"{hub.cdn_url}/{sha}",
                    "X-Linked-Etag": f'"{sha}"',
                    "X-Linked-Size": str(len(data)),
                    "ETag": f'"{git_blob_id(lfs_pointer(data))}"',
                }
                self._send(302, headers, b"", body)
                return
            headers["ETag"] = f'"{git_blob_id(data)}"'
            self._send(200, headers, data, body)

        def _cdn(self, sha: str, body: bool) -> None:
            found = hub._blobs.get(sha)
            if found is None:
                self._send(404, {}, b"", body)
                return
            name, data = found
            if name.rsplit("/", 1)[-1] in hub.corrupt:
                data = bytes(b ^ 0x5A for b in data)
            start = 0
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes=") and ranged[6:].split("-")[0].isdigit():
                start = int(ranged[6:].split("-")[0])
            headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self._send(206 if start else 200, headers, data[start:], body)

    return Handler


def _json(data: dict) -> bytes:
    return json.dumps(data, indent=2).encode()


def real_repos(folder: Path) -> list[Repo]:
    """The three repositories a real run reads, with their real names and layouts and tiny
    files: real ONNX models and a real checkpoint where something opens them (written under
    ``folder``), short byte strings elsewhere."""
    import torch

    from mimicache.testing.tiny_dwpose import write_tiny_dwpose

    det, pose = write_tiny_dwpose(folder)
    checkpoint = io.BytesIO()
    torch.save({"unet.conv_in.weight": torch.ones(2, 2), "pose_net.final.bias": torch.zeros(3)}, checkpoint)  # fmt: skip
    lfs = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.pth filter=lfs diff=lfs merge=lfs -text\n"  # fmt: skip
    svd = {
        ".gitattributes": lfs,
        "LICENSE": b"STABILITY AI COMMUNITY LICENSE AGREEMENT (test copy)\n",
        "README.md": b"# Stable Video Diffusion 1.1 Image-to-Video (test copy)\n",
        "model_index.json": _json(
            {"_class_name": "StableVideoDiffusionPipeline", "_diffusers_version": "0.24.0.dev0"}
        ),
        "feature_extractor/preprocessor_config.json": _json({"crop_size": 224, "do_resize": True}),
        "image_encoder/config.json": _json({"architectures": ["CLIPVisionModelWithProjection"]}),
        "image_encoder/model.fp16.safetensors": b"clip fp16 weights " * 40,
        "scheduler/scheduler_config.json": _json({"_class_name": "EulerDiscreteScheduler"}),
        "unet/config.json": _json({"_class_name": "UNetSpatioTemporalConditionModel"}),
        "unet/diffusion_pytorch_model.fp16.safetensors": b"unet fp16 weights " * 90,
        "vae/config.json": _json({"_class_name": "AutoencoderKLTemporalDecoder"}),
        "vae/diffusion_pytorch_model.fp16.safetensors": b"vae fp16 weights " * 30,
        "svd_xt_1_1.safetensors": b"single-file checkpoint " * 50,
    }
    mimicmotion = {
        ".gitattributes": lfs,
        "README.md": b"# MimicMotion (test copy)\n",
        "MimicMotion.pth": b"the 1.0 checkpoint " * 20,
        "MimicMotion_1-1.pth": checkpoint.getvalue(),
    }
    dwpose = {
        ".gitattributes": b"*.onnx filter=lfs diff=lfs merge=lfs -text\n",
        "README.md": b"# DWPose (test copy)\n",
        "yolox_l.onnx": det.read_bytes(),
        "dw-ll_ucoco_384.onnx": pose.read_bytes(),
        "dw-ss_ucoco.onnx": b"a smaller pose model " * 10,
    }
    return [
        # the names are written out, not imported: the repositories are what the hub has
        Repo("stabilityai/stable-video-diffusion-img2vid-xt-1-1", svd, gated=True),
        Repo("tencent/MimicMotion", mimicmotion),
        Repo("yzd-v/DWPose", dwpose),
    ]
