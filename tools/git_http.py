#!/usr/bin/env python3
"""Serve git repositories read-only over smart HTTP on 127.0.0.1, through git's own ``git http-backend``.

For tests that must install the pack the way users do (``git clone https://...``) without leaving the machine.
Stdlib only::

    from git_http import GitHttpServer, bare_mirror
    bare_mirror(REPO, root / "owner" / "name")            # a bare repository of this checkout's HEAD
    with GitHttpServer(root) as srv:                       # http://127.0.0.1:PORT/owner/name
        subprocess.run(["git", "clone", srv.url + "/owner/name", "dest"], check=True)

Every request is recorded in ``srv.requests`` (method and path), so a test can show what was fetched.
"""
from __future__ import annotations

import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def bare_mirror(repo: Path | str, dest: Path | str, include_worktree_changes: bool = True) -> str:
    """Make ``dest`` a bare repository whose ``main`` branch is ``repo``'s HEAD; returns that commit.

    With ``include_worktree_changes``, uncommitted changes to tracked files are included (``git stash create``
    makes a commit of them without touching the checkout); untracked files never are, as on a push."""
    repo, dest = Path(repo), Path(dest)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    commit = git("rev-parse", "HEAD")
    stash = git("stash", "create") if include_worktree_changes else ""
    if stash:  # one plain commit on top of HEAD holding the working tree's tracked files
        commit = git("commit-tree", f"{stash}^{{tree}}", "-p", commit, "-m",
                     "uncommitted changes to tracked files (test mirror)")
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "--bare", str(dest)], check=True)
    subprocess.run(["git", "-C", str(repo), "push", "-q", "--force", str(dest), f"{commit}:refs/heads/main"],
                   check=True)
    subprocess.run(["git", "-C", str(dest), "symbolic-ref", "HEAD", "refs/heads/main"], check=True)
    return commit


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        pass

    def _backend(self) -> None:
        path, _, query = self.path.partition("?")
        self.server.requests.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        for header, var in (("Content-Encoding", "HTTP_CONTENT_ENCODING"), ("Git-Protocol", "GIT_PROTOCOL")):
            if self.headers.get(header):
                env[var] = self.headers[header]
        proc = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=env)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = proc.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        if proc.returncode != 0 and not head:
            status, payload = 500, proc.stderr
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _backend
    do_POST = _backend


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.requests: list[str] = []


class GitHttpServer:
    """``git http-backend`` for every repository under ``root``, on a free 127.0.0.1 port (a context manager)."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[str]:
        return [] if self._server is None else list(self._server.requests)

    def start(self) -> GitHttpServer:
        self._server = _Server(self.root)
        self._thread = threading.Thread(target=self._server.serve_forever, name="git-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> GitHttpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    import sys
    import time

    srv = GitHttpServer(sys.argv[1] if len(sys.argv) > 1 else ".").start()
    print(f"serving git repositories under {srv.root} at {srv.url}", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        srv.stop()
