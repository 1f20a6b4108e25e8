"""The trusted in-sandbox harness: judges one candidate program per job.

Standard library only and self-contained, so any backend runs it unchanged:
the process backend starts it as warm workers on the host, the Docker
backend ships the same package into its image. The parts, by role:

- ``worker``: one warm slot: isolation once, then one run at a time, and
  who is to blame when something breaks (the host or the run).
- ``isolation``: namespaces, the minimal root, scratch mounts, cgroups.
- ``zygote``: the one process candidates are forked from; it never holds a job.
- ``candidate``: the process that runs the model's program and serves calls.
- ``judge`` and ``judge_process``: the process that runs the problem's prefix
  and tests against a stub, and the worker's handle on it.
- ``wire``: length-prefixed frames, the one wire format.
- ``plaindata`` and ``stdlib_values``: how arguments and results cross as
  data (and the snapshot a returned ``re.Match`` becomes).
- ``kernel``: namespaces, mounts, prctl, rlimits and seccomp through libc.
- ``wipe``: emptying a run's writable directories, whatever tree it left.
- ``processes``: a container server's view of its processes (kill all but,
  fingerprints of the judge and the zygote).

The tests never run in the candidate's process, and the candidate never holds
them: see each module's docstring for what it covers.
"""
