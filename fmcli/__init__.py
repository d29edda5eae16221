"""fmcli: Factorization Machines from the command line.

This module holds only the version: importing it must stay cheap (no numba).
"""

__version__ = "0.1.0"
