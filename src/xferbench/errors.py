"""Exceptions with a meaning for the user.

Anything derived from :class:`UserError` is printed by the CLI as one line and
ends the process with exit code 2, without a traceback.
"""

import signal


def one_line(exc: BaseException) -> str:
    """An exception's message folded onto one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class UserError(Exception):
    """A problem the user can fix; the CLI prints str(exc) as one line and exits 2."""


class PluginError(UserError):
    """A plugin is broken or clashes with another one."""


class UnknownNameError(UserError):
    """A backbone, dataset, head or reporter name that no plugin registers."""


class OptionError(UserError):
    """A ``--*-opt K=V`` option that the receiving plugin rejects."""


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGHUP) raised as a KeyboardInterrupt, so it is handled just as Ctrl-C is.

    ``signum`` is the signal; ``exit_code`` follows the shell's 128 + signal number convention.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return str(self.args[0])

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def interrupt_exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal that stopped the process: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return exc.exit_code if isinstance(exc, Interrupted) else 130
