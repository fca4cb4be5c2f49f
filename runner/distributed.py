"""Runs and pipeline stages on a Ray cluster (`--ray [ADDRESS]`): the work spread, the file on the driver.

Each job is one Ray task that runs the same function as the local runner (`runner.run.run_one`; for
synth and judge, the same structured completion, `json_completion`) and returns its result; the driver
writes the lines as they complete through the one resumable JsonlWriter, so resume, skip-what-is-done
and the file's bytes are the local runner's. The driver bounds the tasks in flight per gateway, sends
each to the least busy gateway of a list, and retries an attempt that did not finish (a worker or node
died, an unreachable gateway or LLM) a bounded number of times, on another gateway when there is one.
After the last attempt it ends as the local runner would: an unreachable gateway or LLM is not written
(the next run retries it), anything else is a written `error` row.

Ray is optional (`pip install 'simgate[ray]'`) and imported only here, only when asked for.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from simgate.runner.errors import DependencyMissing, RunnerError
from simgate.runner.run import Job, Unreachable, failed_trajectory, run_one
from simgate.runner.settings import RunSettings
from simgate.runner.structured import Endpoint, client_for, json_completion
from simgate.runner.trajectory import Trajectory


class RayOptions(BaseModel):
    """Where the cluster is and how hard to try."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(None, description="None: start a local Ray; 'auto': the cluster this machine is "
                                "in; host:port of its head; ray://host:10001 (Ray Client)")
    retries: int = Field(2, ge=0, le=20, description="attempts after the first for a job that did not finish")
    task_cpus: float = Field(0.25, gt=0, le=64, description="CPUs Ray reserves per job: a trajectory mostly "
                             "waits on the LLM and the gateway, so several share a core")


class AttemptFailed(Exception):
    """A Ray task ended without a result (its worker or node died, or it raised)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def require_ray() -> Any:
    """The `ray` module, or DependencyMissing saying how to install it."""
    try:
        import ray
    except ImportError:
        raise DependencyMissing("--ray needs Ray: pip install 'simgate[ray]'") from None
    return ray


def simgate_version() -> str:
    try:
        return version("simgate")
    except PackageNotFoundError:
        return "source"


def _call(function: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
    """On a worker: one async job function, in its own event loop."""
    return anyio.run(function, *args)


async def worker_versions() -> dict[str, str]:
    """On a worker: what it runs (checked once, before any job: a node without simgate fails here, clearly)."""
    return {"simgate": simgate_version()}


class RayCluster:
    """A connection to a Ray cluster for one command. `with RayCluster(options) as cluster:` in the main
    thread (ray.init wants it); `await cluster.call(...)` from async code. A local Ray it started is
    shut down at the end; a cluster it joined is left as it was."""

    def __init__(self, options: RayOptions, *, env: dict[str, str] | None = None) -> None:
        self.options = options
        self._env = env or {}  # environment the jobs need on every node (an API key named by --api-key-env)
        self._owned = False
        self._remote: Any = None

    def __enter__(self) -> RayCluster:
        ray = require_ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"log_to_driver": False}
            if self.options.address is None:
                kwargs["include_dashboard"] = False
            try:
                ray.init(address=self.options.address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = self.options.address or "a local Ray"
                raise RunnerError(f"cannot start or join the Ray cluster at {where}: {str(exc).splitlines()[0]}") \
                    from None
            self._owned = True
        self._remote = ray.remote(_call)
        try:
            found = ray.get(self._options(name="simgate:probe").remote(worker_versions, ()), timeout=300)
        except Exception as exc:  # noqa: BLE001  (any failure here means the workers cannot run simgate)
            self.__exit__(None, None, None)
            raise RunnerError(f"the Ray cluster's workers cannot run simgate ({str(exc).splitlines()[-1][:300]}); "
                              f"install simgate[ray] on every node") from None
        if found["simgate"] != simgate_version():
            self.__exit__(None, None, None)
            raise RunnerError(f"the Ray cluster's workers run simgate {found['simgate']}, this driver "
                              f"{simgate_version()}: install the same version on every node")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._owned:
            require_ray().shutdown()
            self._owned = False

    def _options(self, name: str) -> Any:
        runtime_env = {"env_vars": self._env} if self._env else None
        # max_retries=0: the driver retries (on another gateway, counting attempts), not Ray behind its back.
        return self._remote.options(name=name, num_cpus=self.options.task_cpus, max_retries=0,
                                    runtime_env=runtime_env)

    async def call(self, function: Callable[..., Awaitable[Any]], *args: Any, name: str) -> Any:
        """One attempt of `function(*args)` on the cluster (a module-level async function and picklable
        arguments); AttemptFailed if it ended without a result."""
        ray = require_ray()
        ref = self._options(name).remote(function, args)
        try:
            return await ref
        except ray.exceptions.RayError as exc:
            raise AttemptFailed(_first_line(exc)) from None
        except BaseException:
            ray.cancel(ref, force=True)  # the driver is stopping: do not leave the job running
            raise

    async def call_with_retries(self, function: Callable[..., Awaitable[Any]], *args: Any, name: str) -> Any:
        """`function(*args)` on the cluster, retried up to `retries` times; AttemptFailed after the last."""
        failures: list[str] = []
        for _ in range(self.options.retries + 1):
            try:
                return await self.call(function, *args, name=name)
            except AttemptFailed as exc:
                failures.append(exc.message)
        raise AttemptFailed(_gave_up(failures))


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    # A RayTaskError's message ends with the worker's exception; the rest is its traceback.
    last = isinstance(exc, require_ray().exceptions.RayTaskError)
    text = (lines[-1] if last else lines[0]) if lines else ""
    return f"{type(exc).__name__}: {text.strip()[:300]}"


def _gave_up(failures: list[str]) -> str:
    return f"no attempt finished on the Ray cluster ({len(failures)} attempts); the last: {failures[-1]}"


async def _attempt_job(job_json: str) -> dict[str, str]:
    """On a worker: the local runner's own job function; the trajectory as its output line."""
    job = Job.model_validate_json(job_json)
    try:
        trajectory = await run_one(job.task, job.settings)
    except Unreachable as exc:
        return {"unreachable": exc.message}
    return {"line": trajectory.to_line()}


class GatewaySlots:
    """At most `in_flight` jobs per gateway; each job goes to the least busy one (not the one it just
    failed on, when another is free)."""

    def __init__(self, urls: list[str], in_flight: int) -> None:
        self.urls = urls
        self.in_flight = in_flight
        self._busy = dict.fromkeys(urls, 0)
        self._changed = anyio.Condition()

    async def take(self, avoid: str | None) -> str:
        async with self._changed:
            while True:
                free = [url for url in self.urls if self._busy[url] < self.in_flight]
                if free:
                    preferred = [url for url in free if url != avoid] or free
                    url = min(preferred, key=lambda u: self._busy[u])
                    self._busy[url] += 1
                    return url
                await self._changed.wait()

    async def give(self, url: str) -> None:
        async with self._changed:
            self._busy[url] -= 1
            self._changed.notify()


class RayJobs:
    """The runner's job function on a Ray cluster: what `runner.run.execute` calls for each job."""

    def __init__(self, cluster: RayCluster, gateways: list[str], in_flight: int) -> None:
        if not gateways:
            raise RunnerError("--ray needs at least one --gateway")
        self.cluster = cluster
        self._gateways = GatewaySlots(gateways, in_flight)
        self.attempts_failed = 0  # attempts that ended without a trajectory and were retried or given up

    @property
    def concurrency(self) -> int:
        return self._gateways.in_flight * len(self._gateways.urls)

    async def __call__(self, job: Job) -> Trajectory:
        failures: list[str] = []
        unreachable = False
        avoid: str | None = None
        for _ in range(self.cluster.options.retries + 1):
            url = await self._gateways.take(avoid)
            on_gateway = job.model_copy(update={"settings": job.settings.model_copy(update={"gateway": url})})
            try:
                result = await self.cluster.call(_attempt_job, on_gateway.model_dump_json(),
                                                 name=f"simgate:run:{job.task.id}")
            except AttemptFailed as exc:
                failures.append(exc.message)
                unreachable = False
            else:
                if "line" in result:
                    return Trajectory.model_validate_json(result["line"])
                failures.append(f"{url}: {result['unreachable']}")
                unreachable = True
            finally:
                await self._gateways.give(url)
            self.attempts_failed += 1
            avoid = url
        if unreachable:  # as the local runner: says nothing about the agent, so not written
            raise Unreachable(_gave_up(failures))
        return failed_trajectory(job, _gave_up(failures))


async def _remote_completion(endpoint: Endpoint, prompt: str, schema: dict[str, Any], name: str,
                             options: dict[str, Any]) -> tuple[Any, str | None]:
    """On a worker: the stages' one structured completion, with a client of its own."""
    async with client_for(endpoint) as client:
        return await json_completion(client, endpoint, prompt, schema, name, **options)


class RayCompletions:
    """The synth and judge stages' `complete` on a Ray cluster: the same call and the same (value, why)
    answer as `json_completion`; an attempt that did not finish is retried, and after the last it is a
    failed generation or judgement, counted and recorded as the local stage records one."""

    def __init__(self, cluster: RayCluster, stage: str) -> None:
        self.cluster = cluster
        self.stage = stage

    async def __call__(self, client: Any, endpoint: Endpoint, prompt: str, schema: dict[str, Any], name: str,
                       **options: Any) -> tuple[Any, str | None]:
        del client  # the worker makes its own
        try:
            return await self.cluster.call_with_retries(_remote_completion, endpoint, prompt, schema, name, options,
                                                        name=f"simgate:{self.stage}")
        except AttemptFailed as exc:
            return None, f"ray: {exc.message}"


def gateway_urls(settings: RunSettings, urls: list[str]) -> list[str]:
    """Each URL checked and normalized as the settings' own gateway is (…/mcp appended)."""
    return [RunSettings.model_validate({**settings.model_dump(), "gateway": url}).gateway for url in urls]


def job_env(settings: RunSettings) -> dict[str, str]:
    """The API key the agents need on every node, from the driver's environment."""
    if settings.api_key_env and settings.api_key_env in os.environ:
        return {settings.api_key_env: os.environ[settings.api_key_env]}
    return {}
