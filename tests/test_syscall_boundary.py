"""System calls only in pymach._linux, read from the source.

docs/architecture.md and DESIGN.md promise that one place speaks ctypes and
system calls: the _linux package, where each mechanism's calls sit beside
the kernel facts they rely on. Every module under src/pymach outside
_linux is parsed (not imported) and must not:

- import a module whose purpose is to make system calls or to load C
  code: ``ctypes``, ``socket``, ``select``, ``selectors``, ``fcntl``,
  ``mmap``, ``signal``, ``resource``, ``termios``, ``pty``, ``posix``
  (os's own C module, which would dodge the rule below);
- name one of the os module's system call wrappers (SYSCALLS below),
  called or passed as a function (``stack.callback(os.close, fd)``), as
  ``os.x``, ``from os import x`` or through an alias of os;
- load a C library through ctypes (``CDLL``, ``cdll``, ``ctypes.util``,
  ``pythonapi``, ``get_errno``...), even where ctypes may be imported.

SYSCALLS is every os function that is a thin wrapper of a system call on a
kernel object: a file descriptor (open, read, write, close, dup, fstat,
pipe, eventfd, memfd, its flags...) or a process (fork, kill, waitpid,
pidfd, the scheduler, priorities, credentials); memory and signals are the
mmap and signal modules', seals and fd flags the fcntl module's. Left
out, on purpose: the process's identity (getpid, getuid, ...), which reads
no kernel object and changes nothing; the environment and path arithmetic
(os.environ, os.path, os.fsencode); sysconf and cpu_count (constants of the
machine); os.urandom (a library facility, not a mechanism of pymach); the
interpreter's hooks (register_at_fork); pure helpers (strerror,
waitstatus_to_exitcode); and file system names (listdir, unlink, stat of a
path, readlink), which no Mach object is made of. ``subprocess`` is not
forbidden either: it runs a program, a whole life cycle that pymach uses
and does not implement.

ALLOWED lists the exceptions kept on purpose, each with its reason. An
entry that no longer happens must leave it.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "pymach"

FORBIDDEN_MODULES = frozenset({
    "ctypes", "socket", "select", "selectors", "fcntl", "mmap", "signal", "resource", "termios", "pty", "posix",
})

SYSCALLS = frozenset({
    # file descriptors: their life, their data, their flags
    "open", "openpty", "close", "closerange", "dup", "dup2", "pipe", "pipe2", "read", "readv", "pread", "preadv",
    "write", "writev", "pwrite", "pwritev", "sendfile", "splice", "copy_file_range", "lseek", "fsync",
    "fdatasync", "ftruncate", "truncate", "posix_fallocate", "posix_fadvise", "fstat", "fstatvfs", "fchmod",
    "fchown", "fchdir", "get_inheritable", "set_inheritable", "get_blocking", "set_blocking", "device_encoding",
    "isatty", "ttyname", "login_tty", "mkfifo", "mknod",
    "eventfd", "eventfd_read", "eventfd_write", "memfd_create",
    # processes
    "fork", "forkpty", "_exit", "abort", "kill", "killpg", "wait", "wait3", "wait4", "waitid", "waitpid",
    "pidfd_open", "setsid", "setpgid", "setpgrp", "tcsetpgrp", "unshare", "setns",  # (the last two: 3.12)
    "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe", "posix_spawn", "posix_spawnp",
    "nice", "setpriority", "getpriority", "sched_setaffinity", "sched_getaffinity", "sched_setscheduler",
    "sched_setparam", "sched_yield", "setuid", "setgid", "seteuid", "setegid", "setreuid", "setregid",
    "setresuid", "setresgid", "setgroups", "initgroups",
    # (memory and signals: the mmap and signal modules, in FORBIDDEN_MODULES)
})

# ctypes' ways to reach C code: forbidden outside _linux even where ctypes
# may be imported (for structs)
LIBRARY_LOADING = frozenset({
    "CDLL", "PyDLL", "cdll", "pydll", "LibraryLoader", "pythonapi", "util", "get_errno", "set_errno",
    "CFUNCTYPE", "PYFUNCTYPE",
})

# module (a path under src/pymach, fnmatch pattern) -> {name: reason}
ALLOWED: dict[str, dict[str, str]] = {
    "mach/*.py": {
        "ctypes": "the C interface declares <mach/*.h>'s structs and takes byref() out-parameters: its "
                  "arguments are ctypes objects (no library is loaded: see LIBRARY_LOADING)",
    },
    "examples/*.py": {
        "ctypes": "the book's C programs, ported line for line to the C interface: their buffers and "
                  "out-parameters are ctypes objects, as in C",
    },
    "_kern/vm_remote.py": {
        "ctypes": "thread_get_state and thread_set_state take and give XNU's x86_thread_state64_t, a C struct "
                  "of the Mach interface that the C veneer hands its callers as it is",
    },
    "bootstrap.py": {
        "ctypes": "the Pythonic bootstrap client calls the C interface's bootstrap_* routines: byref() "
                  "out-parameters, and the bootstrap_list array it hands back to mach_vm_deallocate",
    },
    "servers/bootstrap.py": {
        "ctypes": "the server is written against the C interface, as a MIG server in C is: its messages "
                  "are ctypes structs, its out-parameters byref()",
    },
    "tools/tour.py": {
        "signal": "names the signal that ended an example (Signals, strsignal, SIGSEGV, SIGBUS); it "
                  "sends, blocks and catches none",
    },
    "tools/vm.py": {
        "ctypes": "`pymach vm read|write` is a client of the C interface (mach_vm_read_overwrite into a "
                  "ctypes buffer, byref out-parameters)",
    },
    "tools/bench_ipc.py": {
        "ctypes": "the mach_msg cases are clients of the C interface: their messages are ctypes structs, "
                  "as a C program's are",
    },
    "mig/rpc.py": {
        "ctypes": "MIG's stubs and servers are clients of the C interface: they build messages in ctypes "
                  "buffers for mach_msg and write out-parameters through byref(), as mig's C code does",
    },
    "mig/kobject.py": {
        "ctypes": "the kernel objects' servers run the C interface's routines through MIG's generated demux: "
                  "the request and reply are ctypes buffers, as mach_msg_server's are",
    },
    "tools/bench_mig.py": {
        "ctypes": "the hand-written MIG exchange is a C interface client: its request and reply are ctypes "
                  "structs, as a C program's are",
    },
    "tools/_callgrind.py": {
        "ctypes": "the counted cases copy the message out of and into ctypes buffers, as any mach_msg given "
                  "a C struct must (the floor), and as the C interface's callers do",
    },
}


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def violations(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, name) of every forbidden thing in ``source``: a forbidden
    module imported (its name), an os syscall wrapper named ("os.read"), a
    ctypes library loader named ("ctypes.CDLL")."""
    tree = ast.parse(source, filename)
    os_aliases = {"os"}
    ctypes_aliases: set[str] = set()
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                if top in FORBIDDEN_MODULES:
                    found.append((node.lineno, top))
                if top == "ctypes":
                    ctypes_aliases.add(a.asname or "ctypes")
                    if a.name != "ctypes" and a.name.split(".")[1] in LIBRARY_LOADING:
                        found.append((node.lineno, f"ctypes.{a.name.split('.')[1]}"))
                if a.name == "os":
                    os_aliases.add(a.asname or "os")
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            top = node.module.split(".")[0]
            if top in FORBIDDEN_MODULES:
                found.append((node.lineno, top))
            if node.module == "os":
                found += [(node.lineno, f"os.{a.name}") for a in node.names if a.name in SYSCALLS]
            if top == "ctypes":
                sub = node.module.split(".")[1:2]
                if sub and sub[0] in LIBRARY_LOADING:
                    found.append((node.lineno, f"ctypes.{sub[0]}"))
                found += [(node.lineno, f"ctypes.{a.name}") for a in node.names if a.name in LIBRARY_LOADING]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in os_aliases and node.attr in SYSCALLS:
                found.append((node.lineno, f"os.{node.attr}"))
            elif node.value.id in ctypes_aliases and node.attr in LIBRARY_LOADING:
                found.append((node.lineno, f"ctypes.{node.attr}"))
    return sorted(set(found))


def _modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] != "_linux"]


def _entry(table: dict[str, dict[str, str]], module: str, name: str) -> str | None:
    """The pattern of ``table`` that lets ``module`` use ``name``, if any."""
    for pattern, names in table.items():
        if fnmatch.fnmatchcase(module, pattern) and name in names:
            return pattern
    return None


def _all_violations() -> list[tuple[str, int, str]]:
    return [(_relative(p), line, name) for p in _modules() for line, name in violations(p.read_text(), str(p))]


def test_the_source_tree_is_there() -> None:
    # the test reads the source, whatever copy of pymach is installed
    mods = {_relative(p) for p in _modules()}
    assert {"_kern/ipc_port.py", "_kern/mach_msg.py", "ipc.py", "tools/bench.py"} <= mods
    assert (PACKAGE / "_linux" / "unix.py").is_file()


def test_the_check_finds_what_it_forbids() -> None:
    src = ("import os as o, socket\nimport ctypes.util\nfrom select import epoll\nfrom os import close, getpid\n"
           "from ctypes import CDLL, Structure\nimport ctypes as C\n"
           "o.read(0, 1)\ncb(os.dup, 3)\nC.cdll.LoadLibrary('x')\nos.getpid()\nos.path.join('a')\n")
    assert violations(src) == [
        (1, "socket"), (2, "ctypes"), (2, "ctypes.util"), (3, "select"), (4, "os.close"),
        (5, "ctypes"), (5, "ctypes.CDLL"), (6, "ctypes"), (7, "os.read"), (8, "os.dup"), (9, "ctypes.cdll")]


def test_no_system_call_outside_linux() -> None:
    wrong = [f"src/pymach/{module}:{line}: {name}" for module, line, name in _all_violations()
             if _entry(ALLOWED, module, name) is None]
    assert not wrong, "system calls outside pymach._linux (move them there):\n" + "\n".join(wrong)


def test_no_library_loaded_outside_linux() -> None:
    # not even where ctypes is allowed: only _linux binds C functions
    wrong = [f"src/pymach/{module}:{line}: {name}" for module, line, name in _all_violations()
             if name.startswith("ctypes.")]
    assert not wrong, "C libraries loaded outside pymach._linux:\n" + "\n".join(wrong)


def test_every_entry_is_still_needed() -> None:
    seen = {(module, name) for module, _line, name in _all_violations()}
    stale = [f"ALLOWED[{pattern!r}]: {name}" for pattern, names in ALLOWED.items() for name in names
             if not any(fnmatch.fnmatchcase(m, pattern) and n == name for m, n in seen)]
    assert not stale, "no longer needed, take them off their list:\n" + "\n".join(stale)


def test_allowed_entries_give_a_reason() -> None:
    for pattern, names in ALLOWED.items():
        assert any(fnmatch.fnmatchcase(_relative(p), pattern) for p in _modules()), pattern
        for name, reason in names.items():
            assert name in FORBIDDEN_MODULES or name.startswith("os."), (pattern, name)
            assert len(reason.split()) >= 8, (pattern, name)
