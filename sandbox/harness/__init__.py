"""The trusted in-sandbox harness: judges one candidate program per job.

Standard library only and self-contained, so any backend runs it unchanged:
the process backend starts it as warm workers on the host, the Docker
backend ships the same package into its image. The parts, by role:

- ``wire``: length-prefixed frames, the one wire format.
- ``plaindata``: how arguments and results cross as plain data.
- ``stdlib_values``: the decoders of the standard library's value types
  (and the snapshot a returned ``re.Match`` becomes).
- ``kernel``: namespaces, mounts, prctl and rlimits through libc.
- ``candidate``: the process that runs the model's program and serves calls.
- ``judge``: the process that runs the problem's prefix and tests against a stub.
- ``worker``: one warm slot: isolation, the judge, one run at a time.
- ``wipe``: emptying a run's writable directories, whatever tree it left.

The tests never run in the candidate's process, and the candidate never holds
them: see each module's docstring for what it covers.
"""
