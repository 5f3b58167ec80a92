"""The fork's patch workflow: standard-library Python 3.11 or newer."""

import sys

# tomllib (pin.toml) is 3.11's; on an older Python every verb would end in a
# ModuleNotFoundError traceback instead of saying what is wrong.
if sys.version_info < (3, 11):  # noqa: UP036 (this check is for older Pythons)
    sys.exit(f"error: the fork's tooling needs Python 3.11 or newer; "
             f"{sys.executable} is {sys.version.split()[0]}")
