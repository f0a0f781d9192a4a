"""``make bench``: the real create-meta API against a signed, database-free ceiling, both driven by wrk.

Run ``python -m bench --help`` for the options; see ``bench.__main__`` for the sequence.
"""
