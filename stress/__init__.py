"""pymach's stress harnesses: long runs against real processes that print
figures and exit 1 when a check fails. They are not part of the installed
package; run them from a checkout (with pymach installed, or with
PYTHONPATH=src):

    python -m stress.storm --kills 100 --seed 1      # random SIGKILLs of a ten-process system
    python -m stress.load clients                   # load and soak runs (clients, churn, ports, qlimit, soak)
    python -m stress.fuzz_ipc --records 1000000      # malformed records on a real port's connections

tests/test_kill_storm.py, tests/test_load.py and tests/test_ipc_fuzz.py run
the same routines at a scale that fits the test run.
"""
