"""A real HTTP server speaking the OpenAI chat completions API with scripted replies: for deterministic
tests of the code that talks to an LLM (the simulator's repair loop, simulated users, judges, splitters),
where the tiny real LLM's answers could not be known in advance."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class ScriptedEndpoint:
    """A real HTTP server speaking the chat completions API; it answers with the scripted replies, in order
    (a string: the message content; a (content, finish_reason) pair; an int: that HTTP error status)."""

    def __init__(self, replies: list[Any], delay: float = 0.0) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        self.delay = delay
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                time.sleep(endpoint.delay)
                reply = endpoint.replies.pop(0) if endpoint.replies else 500
                if isinstance(reply, int):
                    payload, status = {"error": {"message": "scripted failure", "type": "server_error"}}, reply
                else:
                    content, finish = reply if isinstance(reply, tuple) else (reply, "stop")
                    payload, status = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                       "choices": [{"index": 0, "finish_reason": finish, "message": {
                                           "role": "assistant", "content": content}}]}, 200
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
