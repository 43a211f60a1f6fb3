"""Exceptions with a meaning for the user.

Anything derived from :class:`UserError` is printed by the CLI as one line and
ends the process with exit code 2, without a traceback.
"""


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
