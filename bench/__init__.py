"""`make bench`: the edge's hot paths measured as ratios against the bare minimum (docs/performance.md).

Kept empty of imports: the cold-start child processes run as `python -m bench.cold_child`.
"""
