"""How every dexstack node process starts, spins and stops: `run_node`, each node's `main()`."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

SPIN_POLL_S = 0.1  # longest a SIGINT waits for the spin loop to notice it (the wait has no signal wake-up)
# Errors a node's constructor raises for a bad parameter or file: one line, exit code 1.
START_ERRORS = (ValueError, KeyError, OSError, ParameterException)


def run_node(make_node: Callable[[], Node], args: list[str] | None = None, multithreaded: bool = False) -> None:
    """Standard `main()`: init, spin until SIGINT/SIGTERM, then shut down in order and exit 0.

    rclpy's own signal handler shuts the context down from another thread at once, so a node's
    threads (the sim's physics) could publish on a dead context, and a second SIGINT (a terminal's
    Ctrl-C reaches the whole process group, and `ros2 launch` signals each node again, see
    launch's `ExecuteLocal._shutdown_process`) raised KeyboardInterrupt inside `destroy_node()`.
    Here a signal only asks the spin loop to stop; later ones are ignored. The order is then:
    executor stopped (no callback running), `node.destroy_node()` (the node stops its threads and
    may still publish, e.g. a final hold), then the context. A constructor error from START_ERRORS
    is logged as one line and the process exits 1."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    rclpy.init(args=sys.argv if args is None else args, signal_handler_options=SignalHandlerOptions.NO)
    executor = MultiThreadedExecutor(num_threads=2) if multithreaded else SingleThreadedExecutor()
    node = None
    try:
        node = make_node()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=SPIN_POLL_S)
    except ExternalShutdownException:
        pass
    except START_ERRORS as exc:
        if node is not None:
            raise
        get_logger(_node_name(args)).error(f"cannot start: {exc}")
        raise SystemExit(1) from None
    finally:
        _stop_executor(executor)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()  # also destroys a node whose constructor raised
        # Interpreter teardown resets Python-handled signals to their default (death by SIGINT,
        # exit code -2): a late second Ctrl-C must find SIGINT ignored instead.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_executor(executor: Executor) -> None:
    """Stop the executor once no callback runs. rclpy's `Executor.shutdown` (rclpy/executors.py)
    does not wait for callbacks in flight (it tests `_is_shutdown` after setting it) and destroys
    the executor's guard condition, which a MultiThreadedExecutor task still running then triggers
    (InvalidHandle, "exception was never retrieved"): its worker pool is drained first."""
    pool = getattr(executor, "_executor", None)  # MultiThreadedExecutor's ThreadPoolExecutor
    if pool is not None:
        pool.shutdown(wait=True)
    executor.shutdown()


def _node_name(args: list[str] | None) -> str:
    """The `__node:=` remap in the command line (what `ros2 run`/launch pass), for a log line
    about a node that does not exist yet."""
    for token in sys.argv if args is None else args:
        if token.startswith("__node:="):
            return token.split(":=", 1)[1]
    return Path(sys.argv[0]).stem
