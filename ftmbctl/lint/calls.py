"""Which standard-library names break which rule, and which operations expose a set's order.

Names are fully qualified (``time.time``, ``datetime.datetime.now``, ``builtins.hash``) as
``program.qualified_name`` resolves them through import aliases. A *reference* rule fires on the
name itself, called or not (``key=random.random`` draws as much as ``random.random()``); a
*call* rule only on a call whose arguments make it non-deterministic (``time.localtime()`` reads
the clock, ``time.localtime(t)`` does not; ``socket.AF_INET6`` is a constant, ``socket.socket()``
is not).
"""

from __future__ import annotations

import ast

_CLOCK = frozenset(f"time.{name}" for name in (
    "time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns", "process_time",
    "process_time_ns", "thread_time", "thread_time_ns", "clock_gettime", "clock_gettime_ns")) | frozenset((
    "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.datetime.today", "datetime.date.today"))
_TIMERS = frozenset(("time.sleep", "threading.Timer", "signal.alarm", "signal.setitimer", "sched.scheduler"))
_ENTROPY = frozenset(("os.urandom", "os.getrandom", "uuid.uuid1", "uuid.uuid4", "random.SystemRandom"))
_ENVIRON = frozenset(("os.environ", "os.environb", "os.getenv", "os.getenvb", "os.putenv", "os.unsetenv"))
_FILES = frozenset(("builtins.open", "io.open", "os.open", "codecs.open", "os.listdir", "os.scandir", "os.stat",
                    "os.path.exists", "os.path.isfile", "os.path.isdir", "os.path.getsize", "os.path.getmtime",
                    "builtins.input", "sys.stdin"))
_IDENTITY = frozenset(("os.getpid", "os.getppid", "threading.get_ident", "threading.get_native_id",
                       "threading.current_thread", "_thread.get_ident"))
# socket functions that only convert values: the same result in every process.
_PURE_SOCKET = frozenset(f"socket.{name}" for name in (
    "inet_aton", "inet_ntoa", "inet_pton", "inet_ntop", "htons", "ntohs", "htonl", "ntohl"))
_PROCESS_CALLS = frozenset(("os.system", "os.popen", "os.fork", "os.kill"))
# time functions that read the clock when their time argument is left out: name -> arguments then.
_CLOCK_WITHOUT_ARGUMENT = {"time.localtime": 0, "time.gmtime": 0, "time.ctime": 0, "time.asctime": 0,
                           "time.strftime": 1}

PATH_IO = frozenset(("read_text", "read_bytes", "write_text", "write_bytes", "open", "exists", "stat", "iterdir",
                     "is_file", "is_dir", "unlink", "touch", "mkdir"))


def reference_rule(name: str) -> str | None:
    """The rule a use of the qualified ``name`` breaks at packet time, called or not."""
    if name in _CLOCK:
        return "FTMB101"
    if name in _TIMERS:
        return "FTMB102"
    if name in _ENTROPY or name.startswith("secrets."):
        return "FTMB112"
    if name.startswith("random.") and name != "random.Random":
        return "FTMB111"
    if name in _ENVIRON:
        return "FTMB121"
    if name in _FILES:
        return "FTMB122"
    if name in _IDENTITY:
        return "FTMB203"
    if name == "builtins.hash":
        return "FTMB201"
    if name == "builtins.id":
        return "FTMB202"
    return None


def call_rule(name: str, call: ast.Call) -> str | None:
    """The rule a call of ``name`` breaks because of how it is called (see the module docstring)."""
    given = len(call.args) + len(call.keywords)
    if _CLOCK_WITHOUT_ARGUMENT.get(name) == given:
        return "FTMB101"
    if name == "random.Random" and not given:
        return "FTMB111"  # seeded from the OS; random.Random(seed) is deterministic
    if (name.startswith("socket.") and name not in _PURE_SOCKET) or name.startswith("subprocess."):
        return "FTMB123"
    if name in _PROCESS_CALLS or name.startswith(("urllib.request.", "http.client.")):
        return "FTMB123"
    return None


# ---- set order ----

# Calls whose result does not depend on the order of what they consume.
ORDER_FREE = frozenset(f"builtins.{name}" for name in ("sorted", "len", "set", "frozenset", "sum", "any", "all"))
MIN_MAX = frozenset(("builtins.min", "builtins.max"))  # order-free unless a key= can tie
# Calls that expose the order of an iterable they are given.
ORDER_DEPENDENT = frozenset(f"builtins.{name}" for name in (
    "list", "tuple", "iter", "enumerate", "zip", "map", "filter", "reversed", "str", "repr", "format", "print",
    "bytes", "bytearray")) | frozenset(("collections.deque", "functools.reduce"))
ORDER_DEPENDENT_METHODS = frozenset(("join", "extend", "extendleft", "fromkeys", "writelines"))
ORDER_DEPENDENT_MODULES = ("itertools.",)
SET_RESULT_METHODS = frozenset(("union", "intersection", "difference", "symmetric_difference", "copy"))

# Methods that change a list, dict, set, bytearray or deque in place.
MUTATORS = frozenset((
    "append", "extend", "insert", "remove", "pop", "popleft", "appendleft", "extendleft", "rotate", "clear", "add",
    "discard", "update", "setdefault", "popitem", "sort", "reverse", "difference_update", "intersection_update",
    "symmetric_difference_update"))
