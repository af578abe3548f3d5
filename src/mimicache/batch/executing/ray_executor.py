"""``--executor ray``: the jobs of a plan run by Ray actors that each load the models once.

Generation workers (one GPU each by default) run jobs and write their own results: each
encodes its mp4 and publishes it with its sidecar (to a local folder or an object-storage URL,
create-only under a free name) and returns a small ``JobResult`` (a few kB, no frames); the
driver only logs, keeps ``results.jsonl`` and writes the summary, so one driver can feed many
GPUs. Their progress lines reach the driver's log while the jobs run (a ``ProgressRelay``). Pose workers (CPU, DWPose only) run the pose stages of upcoming jobs so their cache
entries exist when a generation worker gets there. The driver hands out one job at a time to
each idle worker.

Actors rather than a Ray Data pipeline: a job is the unit of retry (a worker that dies is
replaced and its job retried on another; an input error fails once), and the pose stage hands
its results over through the cache, not a dataset.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from typing import Any

from mimicache.batch.executing.executor import ExecutorBase, ExecutorSettings, Resume
from mimicache.batch.executing.job_loop import RunInfo, finish_job, log_start
from mimicache.batch.executing.resume import split_done
from mimicache.batch.executing.workers import (
    GenerationWorker,
    PoseWorker,
    ProgressRelay,
    replay_logs,
)
from mimicache.batch.job import Job, JobResult, Outcome
from mimicache.config import InferenceConfig
from mimicache.engine.spec import EngineSpec
from mimicache.errors import MimicacheError, setting

logger = logging.getLogger(__name__)

POSE_LOOKAHEAD = 2  # pose jobs queued per pose worker: enough to never idle, few to cancel
RELAY_POLL_S = 1.0  # how often the driver logs the workers' progress lines while it waits


@dataclass
class _Slot:
    """A generation worker: its actor handle and process id."""

    actor: Any
    pid: int


def connect(address: str | None) -> bool:
    """Join ``address`` or start a local cluster (no dashboard, no usage stats) unless Ray is
    already initialised in this process; whether this call started it."""
    try:
        import ray
    except ImportError as exc:
        raise MimicacheError(
            f"{setting('executor', 'ray')} needs Ray ({exc}): pip install 'mimicache[ray]'"
        ) from None

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            # Ray's own message spans lines and names its env variables; say it in our terms
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            reason = (lines or [type(exc).__name__])[0].rstrip(".")
            # a cluster that wants a token refuses us with the cause further down: keep it
            cause = next((x for x in lines[1:] if "token" in x.lower() or "auth" in x.lower()), "")
            reason += f"; {cause.rstrip('.')}" if cause else ""
            raise MimicacheError(
                f"{setting('ray_address', address)}: no Ray cluster reachable ({reason}); start "
                "one with `ray start --head`, or leave the address out to run a local one"
            ) from exc
    else:
        # "local": a cluster of our own, even when a `ray start` cluster runs on this machine
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    return True


@dataclass(frozen=True)
class Layout:
    """How many workers of each kind and what each reserves."""

    workers: int
    gpus_per_worker: float
    worker_cpus: float
    pose_workers: int
    pose_cpus: float


def worker_layout(spec: EngineSpec, settings: ExecutorSettings, *, pose: bool = True) -> Layout:
    """The workers the cluster and the settings give (``pose`` False: no pose workers)."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 1.0)
    cpu_device = spec.device == "cpu" or (spec.device is None and not gpus)
    per = settings.gpus_per_worker
    if per is None:
        per = 1.0 if gpus and not cpu_device else 0.0
    if per > 0 and spec.device == "cpu":
        raise MimicacheError(
            f"{setting('gpus_per_worker', per)} needs a CUDA device, not {setting('device', 'cpu')}"
        )
    if per > gpus:  # the actors would wait for GPUs forever
        raise MimicacheError(
            f"{setting('gpus_per_worker', per)}: the Ray cluster has {gpus:g} GPU(s); "
            "add GPU nodes, or leave it out to run the workers on the CPU"
        )
    workers = settings.workers or (max(1, math.floor(gpus / per)) if per else 1)
    poses = settings.pose_workers if pose else 0
    if poses is None:
        poses = 1 if per > 0 else 0
    if per > 0:  # GPU workers need little CPU; the pose stage gets the rest
        worker_cpus = 1.0
        pose_cpus = max(1.0, math.floor((cpus - workers) / max(poses, 1)))
    else:
        worker_cpus = pose_cpus = max(0.01, cpus / (workers + poses))
    return Layout(workers, per, worker_cpus, poses, pose_cpus)


def actor_spec(spec: EngineSpec, gpus: float, cpus: float) -> EngineSpec:
    """``spec`` as an actor with ``gpus`` and ``cpus`` runs it: on CUDA when it has a GPU and
    as many threads as whole CPUs, where the spec does not name them."""
    if spec.device is None:
        spec = spec.replace(device="cuda" if gpus > 0 else "cpu")
    return spec.replace(threads=spec.threads or max(1, math.floor(cpus)))


def started(actors: Sequence[Any]) -> list[dict[str, Any]]:
    """Each actor's ``info()`` once it has loaded its models (the first one's load lines
    logged here).

    Raises:
        MimicacheError: the first error an actor met while loading.
    """
    import ray

    infos = ray.get([a.info.remote() for a in actors])
    replay_logs(infos[0]["logs"])
    errors = [i["error"] for i in infos if i["error"]]
    if errors:
        raise MimicacheError(errors[0])
    return infos


class RayExecutor(ExecutorBase):
    """Runs jobs on Ray actors built from ``spec``. ``on_result(result, executor)`` is called
    on the driver after each job is written. The models live in the workers: ``engine`` and
    ``cache`` stay None here."""

    extra = "ray"
    reads = ("workers", "address", "gpus_per_worker", "pose_workers", "max_retries")

    def __init__(self, *args: Any, **kwargs: Any):
        """``ExecutorBase``'s arguments; the worker pool starts empty (``run`` fills it)."""
        super().__init__(*args, **kwargs)
        self.slots: list[_Slot] = []
        self.pose_actors: list[Any] = []
        self.busy: dict[Any, tuple[Job, _Slot, int]] = {}  # object ref -> job, worker, attempt
        self.reviving: dict[Any, _Slot] = {}  # object ref of a pid call -> restarting worker
        self.relay: Any = None  # the workers' progress lines, logged here as they come
        self.startup_s = 0.0

    # ------------------------------------------------------------------ set-up

    def _start(self) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        workers, per, worker_cpus, pose, pose_cpus = astuple(
            worker_layout(self.spec, self.settings)
        )
        spec = self.spec
        if spec.device is None:
            spec = spec.replace(device="cuda" if per > 0 else "cpu")
        if pose:  # both stages must key the pose entries alike: DWPose on the CPU everywhere
            spec = spec.replace(dwpose_device=spec.dwpose_device or "cpu")
        self.spec = spec
        gen = ray.remote(GenerationWorker).options(
            num_cpus=worker_cpus, num_gpus=per, max_restarts=-1, max_task_retries=0
        )
        # beside the driver, so it goes only with it; restarted (lines lost) if it dies anyway
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.relay = (
            ray.remote(ProgressRelay)
            .options(num_cpus=0, max_restarts=-1, scheduling_strategy=here)
            .remote()
        )
        gen_spec = actor_spec(spec, per, worker_cpus)
        actors = [gen.remote(gen_spec, self.relay) for _ in range(workers)]
        poser = ray.remote(PoseWorker).options(num_cpus=pose_cpus, max_restarts=-1)
        pose_spec = actor_spec(spec, 0, pose_cpus)
        self.pose_actors = [poser.remote(pose_spec) for _ in range(pose)]
        infos = started(actors)
        self.slots = [_Slot(a, i["pid"]) for a, i in zip(actors, infos)]
        self.info = infos[0]
        logger.info(
            "Ray: %d generation worker(s) (%g GPU, %g CPU each), %d pose worker(s)",
            workers,
            per,
            worker_cpus,
            pose,
        )

    def load(self, job_count: int = 0) -> Any:
        raise MimicacheError("the Ray executor's engines live in its workers; run it locally")

    def stop(self) -> None:
        import ray

        relay = [self.relay] if self.relay is not None else []
        for actor in [s.actor for s in self.slots] + self.pose_actors + relay:
            ray.kill(actor, no_restart=True)
        self.slots, self.pose_actors, self.busy, self.reviving = [], [], {}, {}
        self.relay = None

    def worker_pids(self, *, busy_only: bool = False) -> list[int]:
        """Process ids of the live generation workers (``busy_only``: those running a job)."""
        busy = {id(slot) for _, slot, _ in self.busy.values()}
        return [s.pid for s in self.slots if s.pid > 0 and (not busy_only or id(s) in busy)]

    # ------------------------------------------------------------------ the run

    def run(
        self, jobs: Sequence[Job], *, config: InferenceConfig, resume: Resume | None = None
    ) -> list[JobResult]:
        """Every job, in plan order; with ``resume``, jobs whose result exists are "skipped"."""
        spec = self.spec
        logger.info(
            "%d job(s) on Ray; feature cache %s",
            len(jobs),
            spec.cache_dir if spec.cache_enabled else "off",
        )
        started = connect(self.settings.address)
        begin = time.perf_counter()
        try:
            self._start()
            self.startup_s = time.perf_counter() - begin  # workers up, models loaded
            skipped: list[JobResult] = []
            todo = list(jobs)
            if resume is not None:
                import ray

                keys = ray.get(
                    [
                        self.slots[i % len(self.slots)].actor.result_key.remote(job)
                        for i, job in enumerate(jobs)
                    ]
                )
                skipped, todo = split_done(jobs, keys, resume.records)
            done = self._run(todo, config) if todo else []
            by_index = {r.job.index: r for r in [*skipped, *done]}
            return [by_index[job.index] for job in jobs]
        finally:
            self.stop()
            if started:
                import ray

                ray.shutdown()

    def _run(self, jobs: list[Job], config: InferenceConfig) -> list[JobResult]:
        import ray
        from tqdm import tqdm

        sidecar = RunInfo(config, self.info["model_files"], self.info["pose_retarget"])
        info = ray.put(sidecar)  # sent once, not with every job
        order = {job.index: n for n, job in enumerate(jobs, start=1)}
        queue: deque[tuple[Job, int]] = deque((job, 0) for job in jobs)
        idle = list(self.slots)
        pose = _PoseAhead(self.pose_actors, jobs)
        results: list[JobResult] = []
        # A bar only on a terminal: in a log file each job has its own start and done lines.
        on_terminal = self.progress and sys.stderr.isatty()
        bar = tqdm(total=len(jobs), desc="jobs", unit="job", disable=not on_terminal)
        try:
            while queue or self.busy:
                if pose.todo:  # no pose workers, or all submitted: nothing to build
                    pose.submit(queued={job.index for job, _ in queue})
                while idle and queue:
                    job, attempt = _pick(queue, pose.ready)
                    slot = idle.pop(0)
                    if attempt == 0:
                        log_start(job, order[job.index], len(jobs))
                    call = slot.actor.run_job.remote(job, info, pose.take(job.index))
                    self.busy[call] = (job, slot, attempt)
                waiting = [*self.busy, *pose.pending, *self.reviving]
                ready, _ = ray.wait(waiting, num_returns=1, timeout=RELAY_POLL_S)
                if not ready or any(ref in self.busy for ref in ready):
                    self._progress()  # a job's progress lines before its end lines
                for ref in ready:
                    if pose.collect(ref):
                        continue
                    if ref in self.reviving:
                        self._revived(ref, idle)
                        continue
                    job, slot, attempt = self.busy.pop(ref)
                    result = self._result(ref, job, slot, attempt, queue)
                    if slot.pid > 0:
                        idle.append(slot)
                    else:  # dead: Ray restarts it; it takes jobs again once it answers
                        self.reviving[slot.actor.pid.remote()] = slot
                    if result is None:
                        continue
                    if isinstance(result, Outcome):  # its worker is gone: the driver records it
                        result = finish_job(job, result, sidecar)
                    results.append(result)
                    bar.update(1)
                    if self.on_result is not None:
                        self.on_result(result, self)
        finally:
            bar.close()
        return results

    def _progress(self) -> None:
        """Log the workers' progress lines that came meanwhile (one call per job or second).
        A relay lost with its node loses those lines, never the run."""
        import ray

        try:
            lines = ray.get(self.relay.drain.remote(), timeout=30)
        except ray.exceptions.RayError as exc:
            logger.debug("progress lines lost: %s", exc)
            return
        replay_logs(lines)

    def _revived(self, ref: Any, idle: list[_Slot]) -> None:
        """A restarted worker answered (it is idle again), or is not up yet (ask again)."""
        import ray

        slot = self.reviving.pop(ref)
        try:
            slot.pid = ray.get(ref)
        except ray.exceptions.RayActorError:
            time.sleep(0.2)  # still restarting: calls fail fast meanwhile
            self.reviving[slot.actor.pid.remote()] = slot
            return
        idle.append(slot)

    def _result(
        self, ref: Any, job: Job, slot: _Slot, attempt: int, queue: deque[tuple[Job, int]]
    ) -> JobResult | Outcome | None:
        """The job's result as its worker published it; None when the worker died and the
        job goes back in line; the failed ``Outcome`` for the driver to record once it has
        died ``max_retries`` + 1 times."""
        import ray

        try:
            result, lines = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            slot.pid = -1  # Ray restarts it (models loaded again)
            if attempt < self.settings.max_retries:
                logger.warning(
                    "%s: its worker died (%s); retrying on another worker (retry %d of %d)",
                    job.name,
                    type(exc).__name__,
                    attempt + 1,
                    self.settings.max_retries,
                )
                queue.appendleft((job, attempt + 1))
                return None
            logger.error("%s failed: its worker died %d time(s)", job.name, attempt + 1)
            return Outcome(error=f"WorkerDied: the worker running {job.name} died")
        replay_logs(lines)
        return result


def _pick(queue: deque[tuple[Job, int]], ready: set[int]) -> tuple[Job, int]:
    """The first queued job whose pose entries are ready, else the first queued job (a GPU
    never waits: the job computes its poses, or waits for the pose worker's entry)."""
    for n, (job, attempt) in enumerate(queue):
        if job.index in ready:
            del queue[n]
            return job, attempt
    return queue.popleft()


class _PoseAhead:
    """The pose stage: pose jobs submitted in plan order, a few per pose worker at a time,
    skipping jobs a generation worker already took."""

    def __init__(self, actors: list[Any], jobs: list[Job]):
        self.actors = actors
        self.todo = deque(jobs) if actors else deque()
        self.pending: dict[Any, int] = {}  # object ref -> job index
        self.refs: dict[int, Any] = {}
        self.ready: set[int] = set()
        self.results: dict[int, tuple[list[Any], float]] = {}
        self.handed: set[int] = set()  # jobs whose worker got the pose job's ref
        self._next = 0

    def submit(self, queued: set[int]) -> None:
        while self.todo and len(self.pending) < POSE_LOOKAHEAD * len(self.actors):
            job = self.todo.popleft()
            if job.index not in queued:
                continue
            actor = self.actors[self._next % len(self.actors)]
            self._next += 1
            ref = actor.prepare.remote(job)
            self.pending[ref] = job.index
            self.refs[job.index] = ref

    def collect(self, ref: Any) -> bool:
        import ray

        index = self.pending.pop(ref, None)
        if index is None:
            return False
        self.ready.add(index)
        try:
            events, seconds, lines = ray.get(ref)
            replay_logs(lines)
            if index in self.handed:
                self.handed.discard(index)
            else:
                self.results[index] = (events, seconds)
        except ray.exceptions.RayError as exc:  # the generation computes them itself
            logger.debug("pose stage of job %d lost: %s", index, exc)
        return True

    def take(self, index: int) -> tuple[list[Any], float] | list[Any] | None:
        """What a job about to start gets of its pose stage: the events and seconds when
        collected, ``[object ref]`` of a pose job still running (its worker waits for it after
        generating, to record it in the sidecar), None when there is none."""
        ref = self.refs.pop(index, None)
        if index in self.results:
            return self.results.pop(index)
        if ref is not None and ref in self.pending:
            self.handed.add(index)
            return [ref]  # in a list: Ray hands it over unresolved, so the job starts now
        return None
