"""One exception type for mistakes a user can fix (bad file, bad config value, bad checkpoint).

The CLI prints ``LaresError`` messages without a traceback and exits with status 2; every other
exception is a bug in lares_rl and keeps its traceback.
"""


class LaresError(Exception):
    """A user-fixable problem. The message names the file or config key and says what to do."""
