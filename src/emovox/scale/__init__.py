"""Batch jobs at scale: the same per-file work in this process, a local process pool or
on a Ray cluster, with resumable, exactly-once outputs (see docs/CLUSTER.md).

Modules: :mod:`~emovox.scale.inputs` (folders, globs, manifests, streamed),
:mod:`~emovox.scale.work` (the per-file engine function), :mod:`~emovox.scale.executors`
(where it runs), :mod:`~emovox.scale.store` (records, statistics, results on disk) and
:mod:`~emovox.scale.runner` (the job). Nothing heavy is imported here.
"""
