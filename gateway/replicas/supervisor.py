"""The parent of `simgate serve --workers N`: starts N replicas, restarts one that dies (a bounded number
of times), and on SIGTERM/SIGINT stops them all and leaves no process behind."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

import anyio
from anyio.abc import Process

from simgate.gateway.replicas.orphans import become_subreaper, end_orphans
from simgate.gateway.replicas.plan import PLAN_ENV, ReplicaPlan
from simgate.gateway.replicas.sockets import private_listener, public_listeners

logger = logging.getLogger("simgate.replicas")

# A replica that dies more often than this is not restarted again: the whole gateway stops (exit 1), so
# that whatever supervises it sees a failure instead of a gateway quietly serving on fewer replicas.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
MAX_BACKOFF = 10.0
# How long a replica has to finish its requests and close its upstreams after SIGTERM (uvicorn's own
# graceful timeout is 5 s; closing upstreams adds a few more), before SIGKILL.
STOP_GRACE = 20.0
REFUSED_TO_START = 2  # `simgate serve`'s exit code for a config it will not serve (see gateway.serve)


class Supervisor:
    def __init__(self, command: Callable[[int], list[str]], count: int, host: str, port: int) -> None:
        """`command(port)`: how to start one replica on the public port (`simgate serve CONFIG --host H --port
        P`); each gets its plan in the environment. A port 0 is resolved here, once for all replicas."""
        self._count = count
        self._public = public_listeners(host, port, count)  # OSError when the address is taken: nothing started yet
        self.port: int = self._public[0].getsockname()[1]
        self._command = command(self.port)
        try:
            self._private = [private_listener() for _ in range(count)]
        except OSError:
            for sock in self._public:
                sock.close()
            raise
        self._ports = [sock.getsockname()[1] for sock in self._private]
        self._token = secrets.token_urlsafe(32)
        self._processes: dict[int, Process] = {}
        # Held while a replica is started or orphans are ended: a replica just forked but not yet in
        # `_processes` must not be taken for an orphan.
        self._children = anyio.Lock()
        self._stop = anyio.Event()
        self.failure: str | None = None

    async def run(self) -> int:
        adopted = become_subreaper()
        if not adopted:
            logger.warning("cannot adopt orphaned processes here (not Linux): a replica killed with SIGKILL may "
                           "leave its upstream servers running")
        try:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async with anyio.create_task_group() as keepers:
                    for index in range(self._count):
                        keepers.start_soon(self._keep, index, name=f"replica {index}")
                    async with anyio.create_task_group() as watch:
                        watch.start_soon(self._on_signal, signals)
                        await self._stop.wait()
                        watch.cancel_scope.cancel()
            await end_orphans(())
        finally:
            for sock in [*self._public, *self._private]:
                sock.close()
        if self.failure is not None:
            print(f"simgate: {self.failure}", file=sys.stderr)
            return 1
        logger.info("every replica stopped")
        return 0

    async def _on_signal(self, signals: AsyncIterator[signal.Signals]) -> None:
        async for received in signals:
            logger.info("stopping every replica (%s)", received.name)
            self._stop.set()
            return

    async def _keep(self, index: int) -> None:
        """Run replica `index` until the gateway stops; start it again when it dies."""
        deaths: deque[float] = deque()
        backoff = 0.5
        restarted = False
        while not self._stop.is_set():
            started = time.monotonic()
            code = await self._run_once(index, restarted)
            restarted = True
            if self._stop.is_set():
                return
            if code == REFUSED_TO_START:  # a config it cannot serve (the message is on stderr): not retried
                self.failure = f"replica {index} refused to start (exit code {code}); stopping the gateway"
                self._stop.set()
                return
            now = time.monotonic()
            # What it left behind (its upstream servers) ends before a fresh copy starts.
            async with self._children:
                await end_orphans([process.pid for process in self._processes.values()])
            deaths.append(now)
            while deaths and deaths[0] < now - RESTART_WINDOW:
                deaths.popleft()
            if len(deaths) > MAX_RESTARTS:
                self.failure = (f"replica {index} exited {len(deaths)} times within {RESTART_WINDOW:g}s (last exit "
                                f"code {code}); stopping the gateway")
                self._stop.set()
                return
            backoff = 0.5 if now - started > RESTART_WINDOW else backoff
            logger.warning("replica %d exited with code %s; starting it again in %.1fs", index, code, backoff)
            with anyio.move_on_after(backoff):
                await self._stop.wait()
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _run_once(self, index: int, restarted: bool) -> int | None:
        plan = ReplicaPlan(index=index, private_ports=self._ports, public_fd=self._public[index].fileno(),
                           private_fd=self._private[index].fileno(), parent_pid=os.getpid(), restarted=restarted,
                           token=self._token)
        async with self._children:
            process = await anyio.open_process(
                self._command, env={**os.environ, PLAN_ENV: plan.model_dump_json()},
                pass_fds=[plan.public_fd, plan.private_fd], stdin=subprocess.DEVNULL, stdout=None, stderr=None)
            self._processes[index] = process
        logger.info("replica %d started (pid %d)", index, process.pid)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._stop_when_asked, process)
                code = await process.wait()
                tg.cancel_scope.cancel()
            return code
        finally:
            self._processes.pop(index, None)

    async def _stop_when_asked(self, process: Process) -> None:
        await self._stop.wait()
        if process.returncode is None:
            process.terminate()
        with anyio.move_on_after(STOP_GRACE):
            await process.wait()
        if process.returncode is None:
            logger.warning("replica (pid %d) did not stop within %gs; killing it", process.pid, STOP_GRACE)
            process.kill()
