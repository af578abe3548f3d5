"""Hub references (``hf://OWNER/REPO[@REVISION]/PATH``), the hub repositories of a real run's
weights, and what a failed hub call means to the user.

A model file in a config may name a file of a Hugging Face model repository instead of a local
path. It stays a ``HubFile`` until its bytes are needed: ``Path(ref)`` (``os.fspath``) and
``local_file(ref)`` resolve it through this machine's hub cache with ``hf_hub_download``
(online: the cached copy is checked against the hub and fetched when missing or stale;
``HF_HUB_OFFLINE=1``: the cached copy, else an error). So one config names the same weights on
every machine, each machine downloads them once, and whatever fingerprints the file reads the
bytes of the resolved local file. huggingface_hub is imported only when a reference resolves.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from urllib.parse import quote, unquote

from mimicache.config.fields import (
    DEFAULT_DWPOSE_DET_PATH,
    DEFAULT_DWPOSE_POSE_PATH,
    DWPOSE_HF_REPO,
)
from mimicache.errors import ConfigError, ModelLoadError, exception_chain

HUB_PREFIX = "hf://"
# Licences are accepted in a browser on the hub's site, whatever HF_ENDPOINT says.
HUB_SITE = "https://huggingface.co"
BASE_MODEL_REPO = "stabilityai/stable-video-diffusion-img2vid-xt-1-1"
# What inference reads from a base folder; the base UNet's weights are never needed.
BASE_MODEL_PATTERNS = (
    "model_index.json",
    "unet/config.json",
    "vae/config.json",
    "vae/*.safetensors",
    "image_encoder/config.json",
    "image_encoder/*.safetensors",
    "scheduler/*.json",
    "feature_extractor/*.json",
)
CHECKPOINT_REPO = "tencent/MimicMotion"
CHECKPOINT_FILE = "MimicMotion_1-1.pth"
# the hub repository of each published weight file, by file name
HUB_FILES = {
    CHECKPOINT_FILE: CHECKPOINT_REPO,
    DEFAULT_DWPOSE_DET_PATH.name: DWPOSE_HF_REPO,
    DEFAULT_DWPOSE_POSE_PATH.name: DWPOSE_HF_REPO,
}
_FORM = "hf://OWNER/REPO/PATH/IN/REPO (or hf://OWNER/REPO@REVISION/PATH/IN/REPO)"
_RESOLVE_RETRY = (
    "run the command again (the file is not in the hub cache yet; `mimicache download` also "
    "fetches it, and writes a config that names the local files)"
)
_NAME = re.compile(r"^(?!\.)[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class HubFile:
    """A file of a hub model repository, resolved to a local file when first used as a path.

    ``str(ref)`` is the reference as written (``hf://...``); ``os.fspath(ref)`` the local file
    (fetched into the hub cache when needed). A pickled reference resolves again where it is
    unpickled, through that machine's hub cache.
    """

    repo_id: str
    filename: str
    revision: str | None = None

    def __str__(self) -> str:
        at = f"@{quote(self.revision, safe='')}" if self.revision else ""
        return f"{HUB_PREFIX}{self.repo_id}{at}/{self.filename}"

    def __fspath__(self) -> str:
        return str(self.resolve())

    def __reduce__(self):
        return (HubFile, (self.repo_id, self.filename, self.revision))

    @property
    def name(self) -> str:
        """The file's own name (the last part of its path in the repository)."""
        return PurePath(self.filename).name

    def resolve(self) -> Path:
        """The local file: from the hub cache, downloaded into it when missing or stale.

        Returns:
            The cached file's path (a snapshot path of the hub cache).

        Raises:
            ModelLoadError: the hub refused (gated, not found) or could not be reached and the
                file is not cached; the message says what to do.
        """
        local = self.__dict__.get("_local")
        if local is None:
            from huggingface_hub import hf_hub_download

            try:
                local = Path(hf_hub_download(self.repo_id, self.filename, revision=self.revision))
            except Exception as exc:  # every hub failure becomes one message
                raise hub_error(exc, str(self), self.repo_id, retry=_RESOLVE_RETRY) from exc
            object.__setattr__(self, "_local", local)
        return local

    def cached(self) -> Path | None:
        """The local file when the hub cache holds it, else None; never uses the network."""
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(self.repo_id, self.filename, revision=self.revision)
        return Path(found) if isinstance(found, str) else None


def _reference_body(value: object) -> str | None:
    """What follows the ``hf://`` of a reference; a ``Path`` made of one reads ``hf:/...``."""
    if isinstance(value, str) and value.startswith(HUB_PREFIX):
        return value[len(HUB_PREFIX) :]
    if isinstance(value, PurePath) and str(value).startswith("hf:/"):
        return str(value)[len("hf:/") :]
    return None


def is_hub_reference(value: object) -> bool:
    """Whether ``value`` is written as a hub reference (well formed or not)."""
    return isinstance(value, HubFile) or _reference_body(value) is not None


def _split(body: str, text: str) -> tuple[str, str | None, str]:
    parts = body.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ConfigError(f"{text!r} is not a hub reference; write {_FORM}")
    if parts[0] in ("datasets", "spaces"):
        raise ConfigError(f"{text!r}: only model repositories hold weights; write {_FORM}")
    name, at, revision = parts[1].partition("@")
    if not (_NAME.match(parts[0]) and _NAME.match(name)) or (at and not revision):
        raise ConfigError(f"{text!r}: {parts[0]}/{parts[1]} is not a repository id; write {_FORM}")
    rest = parts[2:]
    if any(p in ("", ".", "..") for p in rest):
        raise ConfigError(f"{text!r}: the path inside the repository is not valid; write {_FORM}")
    return f"{parts[0]}/{name}", unquote(revision) if at else None, "/".join(rest)


def hub_file(value: object) -> HubFile | None:
    """``value`` as a ``HubFile`` when it is written as a hub file reference, else None.

    Args:
        value: a config value: a string, a path, or already a ``HubFile``.

    Returns:
        The reference, or None for anything that is not written ``hf://...``.

    Raises:
        ConfigError: ``value`` starts with ``hf://`` but is not ``hf://OWNER/REPO[@REV]/PATH``.
    """
    if isinstance(value, HubFile):
        return value
    body = _reference_body(value)
    if body is None:
        return None
    repo_id, revision, path = _split(body, str(value))
    if not path:
        raise ConfigError(f"{str(value)!r} names a repository, not a file in it; write {_FORM}")
    return HubFile(repo_id, path, revision)


def hub_repo(value: object) -> tuple[str, str | None] | None:
    """A whole repository written ``hf://OWNER/REPO[@REVISION]`` as (repo id, revision).

    Args:
        value: a config value (``base_model_path``).

    Returns:
        (repo id, revision or None), or None when ``value`` is not written ``hf://...``.

    Raises:
        ConfigError: a malformed reference, or one that names a file inside the repository.
    """
    body = _reference_body(value)
    if body is None:
        return None
    repo_id, revision, path = _split(body.rstrip("/"), str(value))
    if path:
        raise ConfigError(
            f"{str(value)!r} names a file; base_model_path takes a whole repository "
            "(hf://OWNER/REPO or hf://OWNER/REPO@REVISION)"
        )
    return repo_id, revision


def local_file(value: str | os.PathLike[str]) -> Path:
    """The local file that ``value`` names: a hub reference resolved, a path expanded.

    Args:
        value: a path, a ``HubFile`` or a string written ``hf://...``.

    Returns:
        The local path (not checked for existence unless it came from the hub).

    Raises:
        ConfigError: a malformed hub reference.
        ModelLoadError: a hub reference that cannot be resolved (see ``HubFile.resolve``).
    """
    ref = hub_file(value)
    if ref is not None:
        return ref.resolve()
    return Path(value).expanduser()


def gated_message(repo_id: str, what: str, *, have_token: bool) -> str:
    """The one message for a gated repository the user may not download yet."""
    page = f"{HUB_SITE}/{repo_id}"
    if have_token:
        step = (
            f"the account of your hub token has not been granted access: open {page}, accept "
            "the licence with that account (or log in with another one: `hf auth login`)"
        )
    else:
        step = (
            f"accept its licence at {page} (logged in to the hub), then log in here with "
            "`hf auth login` (or set HF_TOKEN)"
        )
    # a file of the repository needs no name of its own: the licence covers them all
    prefix = "" if what.startswith(repo_id) else f"{what}: "
    return f"{prefix}{repo_id} is a gated model: {step}, and run the command again"


def _network_types() -> tuple[type[BaseException], ...]:
    try:  # huggingface_hub 1.x and 2.x speak HTTP through httpx2
        import httpx2

        return (ConnectionError, TimeoutError, httpx2.TransportError)
    except ImportError:  # pragma: no cover - another HTTP backend
        return (ConnectionError, TimeoutError)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_error(exc: BaseException, what: str, repo_id: str, *, retry: str = "") -> ModelLoadError:
    """A hub failure as one message that says what to do.

    Args:
        exc: what huggingface_hub raised.
        what: the file or repository asked for, as the user wrote it.
        repo_id: its repository.
        retry: what to do once the hub can be reached again (default: run the command again).

    Returns:
        The ModelLoadError to raise (from ``exc``).
    """
    from huggingface_hub import errors, get_token, is_offline_mode

    page = f"{HUB_SITE}/{repo_id}"
    offline = is_offline_mode() or any(
        isinstance(e, errors.OfflineModeIsEnabled) for e in exception_chain(exc)
    )
    if isinstance(exc, errors.GatedRepoError):
        return ModelLoadError(gated_message(repo_id, what, have_token=get_token() is not None))
    if isinstance(exc, errors.RevisionNotFoundError):
        return ModelLoadError(f"{what}: no such revision in {repo_id} (see {page}/tree/main)")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return ModelLoadError(
            f"{what}: repository {repo_id} not found on the hub ({_endpoint()}): check the name, "
            "or, if it is private, log in with an account that can see it (`hf auth login`)"
        )
    if isinstance(exc, errors.EntryNotFoundError) and not isinstance(exc, FileNotFoundError):
        return ModelLoadError(f"{what}: {repo_id} has no such file (see {page}/tree/main)")
    if offline:
        return ModelLoadError(
            f"{what} is not in the hub cache and HF_HUB_OFFLINE is set: run `mimicache download` "
            "(it fetches the weights and writes a config that names the local files), or go "
            "online (unset HF_HUB_OFFLINE) once so the file is cached"
        )
    network = _network_types()
    cause = next((e for e in exception_chain(exc) if isinstance(e, network)), None)
    if cause is not None or isinstance(exc, errors.LocalEntryNotFoundError):
        shown = f"{type(cause).__name__}: {cause}" if cause is not None else "no answer"
        return ModelLoadError(
            f"{what}: could not reach the hub at {_endpoint()} ({shown}); check the network "
            f"connection (and any proxy or HF_ENDPOINT setting), then {retry or 'run the command again'}"
        )
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "an error"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ModelLoadError(f"{what}: the hub answered {status} ({first}); try again later")
    return ModelLoadError(f"{what}: could not fetch it from the hub ({type(exc).__name__}: {exc})")
