"""The project's error class: every problem a user can cause (a bad file, value, option or
combination) is raised as :class:`AccelSimError` with one sentence naming the file or field and
the value. The CLI turns it, and OS errors, into one line and exit code 2; any other exception is
a bug and keeps its traceback.

It subclasses ``ValueError`` (and :class:`AccelSimTypeError` also ``TypeError``), so API callers
that catch those keep working.
"""


class AccelSimError(ValueError):
    """A user-facing problem: bad input, a bad option, a file that is not what it must be."""


class AccelSimTypeError(AccelSimError, TypeError):
    """A user-facing problem of a value's type (text where a number belongs, ...)."""
