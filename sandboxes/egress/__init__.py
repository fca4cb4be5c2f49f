"""Network allowlists: sandboxes keep no network of their own, and reach the host:port pairs of their
allowlist only through an HTTP proxy the gateway runs on a Unix socket mounted into the sandbox
(`proxy`), reached from inside through a small forwarder (`forwarder`, `mount`). Independent of the
sandbox backend: bubblewrap bind-mounts the socket's directory, Docker can mount it as a volume."""
