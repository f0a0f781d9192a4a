"""Benchmarks of keymeta on real processes; each part states its checks and exits non-zero when one fails.

``python -m bench.all`` runs every part (``make bench``); ``python -m bench``, ``python -m bench.pipeline`` and
``python -m bench.webhooks`` run one each (``--help`` for their options).
"""
