"""An emulated busybox ``/bin/sh`` for ``pods/{name}/exec`` on the emulator.

The dashboard opens a shell in a container and runs single commands; its
tests need a process on the other end that reads stdin, writes stdout and
stderr, honours a terminal (echo, prompt, CR LF, ^C, ^D) and exits with a
status. :class:`Shell` is that process: a handful of busybox applets over a
small fake file system, driven through two async output callbacks. It knows
nothing about WebSockets; :mod:`podindex.sim.kubelet` frames its output.

Known differences from a real shell: no pipes, redirections, globbing,
job control or variables beyond ``$?``, ``$HOSTNAME``, ``$HOME``, ``$PATH``
and ``$PWD``; ``ls`` prints one name per line even on a terminal.
"""

from __future__ import annotations

import asyncio
import posixpath
import shlex
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

Write = Callable[[bytes], Awaitable[None]]

BIN = ("cat", "echo", "env", "false", "hostname", "ls", "pwd", "sh", "sleep", "stty", "true")
BUILTINS = ("cd", "exit")


@dataclass
class ExecSession:
    """One exec request as the emulated kubelet saw it (``FakeCluster.exec_sessions``)."""

    namespace: str
    pod: str
    container: str
    command: list[str]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool
    protocol: str
    sizes: list[tuple[int, int]] = field(default_factory=list)
    """Terminal sizes received on the resize channel, as (Width, Height)."""
    received: bytearray = field(default_factory=bytearray)
    """Every stdin byte received."""
    stdin_closed: bool = False
    """The client half-closed stdin (v5 close frame for channel 0)."""
    exit_code: int | None = None
    status: dict[str, object] | None = None
    """The Status sent on the error channel."""
    ended: bool = False


class Exit(Exception):
    """``exit N``: the shell ends with this status."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class NotExecutable(Exception):
    """The runtime could not start the command (runc: not found in $PATH)."""


def default_files(namespace: str, pod: str, pod_ip: str) -> dict[str, bytes]:
    return {
        "/etc/hostname": f"{pod}\n".encode(),
        "/etc/hosts": (
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"
            f"::1\tlocalhost ip6-localhost ip6-loopback\n{pod_ip}\t{pod}\n"
        ).encode(),
        "/etc/os-release": b'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.22.0\n',
        "/etc/resolv.conf": (
            f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local\n"
            "nameserver 10.96.0.10\noptions ndots:5\n"
        ).encode(),
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace": namespace.encode(),
        "/app/README": b"podindex emulated container\n",
    }


class Shell:
    """A tiny busybox sh: runs commands, interactive or not, with or without a terminal."""

    def __init__(
        self,
        *,
        hostname: str,
        files: Mapping[str, bytes],
        out: Write,
        err: Write,
        tty: bool = False,
        size: Callable[[], tuple[int, int] | None] = lambda: None,
    ) -> None:
        self.hostname = hostname
        self.files = dict(files)
        self.dirs = {"/", "/bin", "/dev", "/etc", "/home", "/proc", "/root", "/sys", "/tmp"}
        self.dirs |= {"/usr", "/var"}
        for path in self.files:
            parent = posixpath.dirname(path)
            while parent not in self.dirs:
                self.dirs.add(parent)
                parent = posixpath.dirname(parent)
        self.cwd = "/"
        self.status = 0
        self.tty = tty
        self.size = size
        self._out = out
        self._err = err

    # --- output ------------------------------------------------------------------------

    async def out(self, data: bytes) -> None:
        await self._out(data.replace(b"\n", b"\r\n") if self.tty else data)

    async def err(self, data: bytes) -> None:
        await self._err(data.replace(b"\n", b"\r\n") if self.tty else data)

    def prompt(self) -> bytes:
        where = "~" if self.cwd == "/root" else self.cwd
        return f"{where} # ".encode()

    # --- entry points --------------------------------------------------------------------

    async def exec(self, argv: list[str], stdin: asyncio.Queue[bytes | None]) -> int:
        """Run an exec request's command the way the runtime starts it (no shell around it)."""
        name = posixpath.basename(argv[0])
        if name not in BIN or (argv[0].startswith("/") and posixpath.dirname(argv[0]) != "/bin"):
            raise NotExecutable(argv[0])
        if name == "sh" and len(argv) == 1:
            return await self.interactive(stdin)
        try:
            return await self.command(argv)
        except Exit as done:
            return done.code

    async def interactive(self, stdin: asyncio.Queue[bytes | None]) -> int:
        """sh reading commands from stdin until ``exit`` or end of input."""
        if self.tty:
            await self._out(self.prompt())
        pending = b""
        while True:
            chunk = await stdin.get()
            if chunk is None:
                if pending.strip() and not self.tty:
                    code = await self.run_line(pending.decode(errors="replace"))
                    if code is not None:
                        return code
                return self.status
            if self.tty:
                typed = await self._terminal_input(chunk, pending)
                if isinstance(typed, int):
                    return typed
                pending = typed[0]
                continue
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                code = await self.run_line(line.decode(errors="replace"))
                if code is not None:
                    return code

    async def _terminal_input(self, chunk: bytes, pending: bytes) -> int | tuple[bytes]:
        """The line discipline of a terminal: echo, erase, ^C, ^D, CR/LF ends a line."""
        for byte in chunk:
            char = bytes([byte])
            if char in (b"\r", b"\n"):
                await self._out(b"\r\n")
                code = await self.run_line(pending.decode(errors="replace"))
                pending = b""
                if code is not None:
                    return code
                await self._out(self.prompt())
            elif char in (b"\x7f", b"\x08"):
                if pending:
                    pending = pending[:-1]
                    await self._out(b"\x08 \x08")
            elif char == b"\x03":
                pending = b""
                self.status = 130
                await self._out(b"^C\r\n" + self.prompt())
            elif char == b"\x04":
                if not pending:
                    await self._out(b"exit\r\n")
                    return self.status
            else:
                pending += char
                await self._out(char)
        return (pending,)

    async def run_line(self, line: str) -> int | None:
        """Run one command line (``;``, ``&&`` and ``||`` lists); an int means the shell exits."""
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            tokens = list(lexer)
        except ValueError:
            await self.err(b"sh: syntax error: unterminated quoted string\n")
            self.status = 2
            return None
        argv: list[str] = []
        skip = False
        try:
            for token in [*tokens, ";"]:
                if token in (";", "&&", "||"):
                    if argv and not skip:
                        self.status = await self.command(argv)
                    argv = []
                    skip = (token == "&&" and self.status != 0) or (
                        token == "||" and self.status == 0
                    )
                    continue
                if token and token[0] in ";&|":
                    await self.err(f"sh: syntax error: unexpected {token!r}\n".encode())
                    self.status = 2
                    return None
                argv.append(self.expand(token))
        except Exit as done:
            return done.code
        return None

    def expand(self, token: str) -> str:
        variables = {
            "?": str(self.status),
            "HOSTNAME": self.hostname,
            "HOME": "/root",
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PWD": self.cwd,
        }
        if token.startswith("$"):
            return variables.get(token[1:].strip("{}"), "")
        return token

    # --- commands ------------------------------------------------------------------------

    def _path(self, arg: str) -> str:
        return posixpath.normpath(posixpath.join(self.cwd, arg))

    async def command(self, argv: list[str]) -> int:
        name, args = posixpath.basename(argv[0]), argv[1:]
        if "/" in argv[0] and posixpath.dirname(argv[0]) != "/bin":
            await self.err(f"sh: {argv[0]}: not found\n".encode())
            return 127
        handler = getattr(self, f"_cmd_{name}", None) if name in BIN + BUILTINS else None
        if handler is None:
            await self.err(f"sh: {argv[0]}: not found\n".encode())
            return 127
        code: int = await handler(args)
        return code

    async def _cmd_echo(self, args: list[str]) -> int:
        newline = True
        if args and args[0] == "-n":
            newline, args = False, args[1:]
        await self.out((" ".join(args) + ("\n" if newline else "")).encode())
        return 0

    async def _cmd_pwd(self, args: list[str]) -> int:
        await self.out(f"{self.cwd}\n".encode())
        return 0

    async def _cmd_hostname(self, args: list[str]) -> int:
        await self.out(f"{self.hostname}\n".encode())
        return 0

    async def _cmd_env(self, args: list[str]) -> int:
        lines = [
            f"HOSTNAME={self.hostname}",
            "HOME=/root",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "KUBERNETES_SERVICE_HOST=10.96.0.1",
            "KUBERNETES_SERVICE_PORT=443",
        ]
        if self.tty:
            lines.append("TERM=xterm")
        await self.out(("\n".join(lines) + "\n").encode())
        return 0

    async def _cmd_true(self, args: list[str]) -> int:
        return 0

    async def _cmd_false(self, args: list[str]) -> int:
        return 1

    async def _cmd_cd(self, args: list[str]) -> int:
        target = self._path(args[0]) if args else "/root"
        if target not in self.dirs:
            await self.err(f"sh: cd: can't cd to {args[0]}: No such file or directory\n".encode())
            return 2
        self.cwd = target
        return 0

    async def _cmd_exit(self, args: list[str]) -> int:
        try:
            code = int(args[0]) if args else self.status
        except ValueError:
            await self.err(f"sh: exit: Illegal number: {args[0]}\n".encode())
            code = 2
        raise Exit(code & 0xFF)

    async def _cmd_sleep(self, args: list[str]) -> int:
        try:
            seconds = float(args[0]) if args else -1.0
        except ValueError:
            seconds = -1.0
        if seconds < 0:
            await self.err(f"sleep: invalid number '{args[0] if args else ''}'\n".encode())
            return 1
        await asyncio.sleep(seconds)
        return 0

    async def _cmd_ls(self, args: list[str]) -> int:
        status = 0
        targets = [a for a in args if not a.startswith("-")] or ["."]
        for i, arg in enumerate(targets):
            path = self._path(arg)
            if path in self.files:
                await self.out(f"{arg}\n".encode())
                continue
            if path not in self.dirs:
                await self.err(f"ls: {arg}: No such file or directory\n".encode())
                status = 1
                continue
            prefix = path.rstrip("/") + "/"
            names = sorted(
                {
                    p[len(prefix) :].split("/", 1)[0]
                    for p in (*self.files, *self.dirs)
                    if p.startswith(prefix) and p != path
                }
            )
            if len(targets) > 1:
                await self.out(f"{'' if i == 0 else chr(10)}{arg}:\n".encode())
            if names:
                await self.out(("\n".join(names) + "\n").encode())
        return status

    async def _cmd_cat(self, args: list[str]) -> int:
        status = 0
        for arg in args:
            path = self._path(arg)
            if path in self.files:
                await self.out(self.files[path])
            elif path in self.dirs:
                await self.err(b"cat: read error: Is a directory\n")
                status = 1
            else:
                await self.err(f"cat: can't open '{arg}': No such file or directory\n".encode())
                status = 1
        return status

    async def _cmd_stty(self, args: list[str]) -> int:
        size = self.size()
        if not self.tty:
            await self.err(b"stty: standard input: Not a tty\n")
            return 1
        if args == ["size"]:
            width, height = size or (0, 0)
            await self.out(f"{height} {width}\n".encode())
        return 0

    async def _cmd_sh(self, args: list[str]) -> int:
        if len(args) >= 2 and args[0] == "-c":
            sub = Shell(
                hostname=self.hostname,
                files=self.files,
                out=self._out,
                err=self._err,
                tty=self.tty,
                size=self.size,
            )
            sub.cwd = self.cwd
            code = await sub.run_line(args[1])
            return sub.status if code is None else code
        await self.err(b"sh: interactive sub-shells are not emulated\n")
        return 2


__all__ = ["ExecSession", "Exit", "NotExecutable", "Shell", "default_files"]
