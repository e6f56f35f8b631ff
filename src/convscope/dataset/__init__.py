"""Dataset examples: stream any dataset through a model for exact per-channel top-k images, statistics
and receptive-field patches (``Scope.scan``, ``Scope.receptive_field``).

Modules: :mod:`.sources` (folders, arrays, torch datasets, batch iterables), :mod:`.topk` (exact streaming
top-k), :mod:`.stats` (mergeable per-channel statistics), :mod:`.receptive` (receptive fields from the
real graph), :mod:`.scan` (the ``Scan`` result).
"""
