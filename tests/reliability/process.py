"""Waiting for a child process to reach a state, by event rather than by timer."""

import os
import threading


def stopped_or_exited(process, timeout):
    """Blocks until ``process`` stops itself (SIGSTOP, ``faults`` action "stop") or exits.

    ``waitpid(WUNTRACED)`` returns on either event, so nothing here depends on how fast the
    machine is; ``timeout`` only guards against a process that never gets there (it is then
    killed, and reported as exited).

    Returns:
      "stopped" or "exited".
    """
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    try:
        _, status = os.waitpid(process.pid, os.WUNTRACED)
    finally:
        watchdog.cancel()
    if os.WIFSTOPPED(status):
        return "stopped"
    process.returncode = (-os.WTERMSIG(status) if os.WIFSIGNALED(status)
                          else os.WEXITSTATUS(status))
    return "exited"
