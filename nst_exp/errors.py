"""The one exception nst_exp raises for problems a user can fix."""


class NstError(Exception):
    """A problem with the user's input or environment.

    The message says what failed, what is allowed and how to fix it; the
    command-line entry point prints it without a traceback.
    """
