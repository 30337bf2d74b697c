"""A minimal RFC 6455 websocket client (stdlib only) for ComfyUI's ``/ws`` progress stream.

ComfyUI pushes JSON text frames (``status``, ``executing``, ``progress``, ``execution_success``,
``execution_error``, ...) and, when previews are on, binary frames; the client never needs to send data, only
answer pings and close. Written here rather than depending on a websocket library so that the sweep's ComfyUI
client runs under any python3 (``tools/comfy_server.py`` shares it); frames are parsed from a buffer, so a read
timeout never leaves a half-read frame behind.
"""
from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import urllib.parse

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketClosed(ConnectionError):
    """The server closed the connection (or the socket broke)."""


class WebSocket:
    """A client connection: ``recv(timeout)`` returns a text message (str), a binary one (bytes) or None on
    timeout; raises :class:`WebSocketClosed` when the peer is gone."""

    def __init__(self, url: str, timeout: float = 10.0):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("ws", "http"):
            raise ValueError(f"only ws:// (plain) URLs are supported, not {url!r}")
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(req.encode())
        self._buf = b""
        while b"\r\n\r\n" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WebSocketClosed(f"{url}: connection closed during the handshake")
            self._buf += chunk
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise WebSocketClosed(f"{url}: handshake refused: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise WebSocketClosed(f"{url}: bad Sec-WebSocket-Accept in the handshake")
        self._parts: list[bytes] = []
        self._part_op = OP_TEXT
        self.closed = False

    def _frame(self) -> tuple[bool, int, bytes] | None:
        """One whole frame from the buffer (fin, opcode, payload), or None if it is not all there yet."""
        b = self._buf
        if len(b) < 2:
            return None
        fin, op, masked, n = b[0] & 0x80, b[0] & 0x0F, b[1] & 0x80, b[1] & 0x7F
        i = 2
        if n == 126:
            if len(b) < 4:
                return None
            n, i = struct.unpack(">H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, i = struct.unpack(">Q", b[2:10])[0], 10
        mask = b""
        if masked:
            if len(b) < i + 4:
                return None
            mask, i = b[i:i + 4], i + 4
        if len(b) < i + n:
            return None
        payload, self._buf = b[i:i + n], b[i + n:]
        if masked:
            payload = bytes(c ^ mask[j % 4] for j, c in enumerate(payload))
        return bool(fin), op, payload

    def _send(self, op: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | op]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
        self.sock.sendall(head + mask + bytes(c ^ mask[j % 4] for j, c in enumerate(payload)))

    def recv(self, timeout: float | None = 1.0) -> str | bytes | None:
        """The next message, or None when none arrived within ``timeout`` seconds."""
        if self.closed:
            raise WebSocketClosed("websocket already closed")
        self.sock.settimeout(timeout)
        while True:
            frame = self._frame()
            if frame is None:
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    return None
                except OSError as e:
                    self.closed = True
                    raise WebSocketClosed(str(e)) from e
                if not chunk:
                    self.closed = True
                    raise WebSocketClosed("connection closed by the server")
                self._buf += chunk
                continue
            fin, op, payload = frame
            if op == OP_PING:
                self._send(OP_PONG, payload)
            elif op == OP_CLOSE:
                self.closed = True
                raise WebSocketClosed("close frame from the server")
            elif op in (OP_TEXT, OP_BINARY, OP_CONT):
                if op != OP_CONT:
                    self._parts, self._part_op = [], op
                self._parts.append(payload)
                if fin:
                    data = b"".join(self._parts)
                    self._parts = []
                    return data.decode("utf-8", errors="replace") if self._part_op == OP_TEXT else data

    def close(self) -> None:
        if not self.closed:
            try:
                self._send(OP_CLOSE, struct.pack(">H", 1000))
            except OSError:
                pass
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass
