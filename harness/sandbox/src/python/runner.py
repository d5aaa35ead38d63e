"""moebench's runner for one generated Python program (moebench-sandbox, python.rs).

It runs the program the way lm-eval's code metrics do (HumanEval and MBPP call the
`code_eval` metric of Hugging Face `evaluate`, whose `execute.py` does this): `exec` of the
source with fresh globals (so `if __name__ == "__main__":` blocks do not run), stdout and
stderr swallowed, stdin unreadable, a wall-clock alarm, and the same destructive functions
set to None. Programs therefore pass or fail exactly as they do there. None of this is the
security boundary: the sandbox around this process is.

Usage: python -B -s runner.py PROGRAM, with MOEBENCH_VERDICT_NONCE and
MOEBENCH_TIMEOUT_SECONDS in the environment. Writes one line to the original stdout:
"<nonce> passed", "<nonce> timed out" or "<nonce> failed: <exception>".
"""
import contextlib
import faulthandler
import io
import os
import signal
import sys

NONCE = os.environ.pop("MOEBENCH_VERDICT_NONCE")
TIMEOUT = float(os.environ.pop("MOEBENCH_TIMEOUT_SECONDS"))
with open(sys.argv[1], encoding="utf-8") as source_file:
    SOURCE = source_file.read()
VERDICT = os.fdopen(os.dup(1), "w", encoding="utf-8")
EXIT = os._exit


class TimeLimit(Exception):
    pass


class Unreadable(io.StringIO):
    """Takes the program's output; reading from it (as stdin) raises OSError."""

    def read(self, *args, **kwargs):
        raise OSError

    def readline(self, *args, **kwargs):
        raise OSError

    def readlines(self, *args, **kwargs):
        raise OSError

    def readable(self, *args, **kwargs):
        return False


class redirect_stdin(contextlib._RedirectStream):
    _stream = "stdin"


def disable_destructive_functions():
    """The functions `code_eval`'s guard sets to None (and the modules it hides)."""
    import builtins
    import shutil
    import subprocess

    faulthandler.disable()
    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in (
        "kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
        "fork", "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink",
        "fchmod", "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown",
        "getcwd", "chdir",
    ):
        setattr(os, name, None)
    shutil.rmtree = None
    shutil.move = None
    shutil.chown = None
    subprocess.Popen = None
    builtins.help = None
    for module in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[module] = None


def on_alarm(signum, frame):
    raise TimeLimit()


def main():
    disable_destructive_functions()
    stream = Unreadable()
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            with redirect_stdin(stream):
                signal.setitimer(signal.ITIMER_REAL, TIMEOUT)
                signal.signal(signal.SIGALRM, on_alarm)
                try:
                    exec(SOURCE, {})
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        result = "passed"
    except TimeLimit:
        result = "timed out"
    except BaseException as error:  # noqa: B036 - any exception fails the program
        message = str(error).replace("\n", " ")
        result = f"failed: {type(error).__name__}: {message}"
    VERDICT.write(f"{NONCE} {result}\n")
    VERDICT.flush()
    EXIT(0)


main()
